"""Net: the layer graph built from a NetParameter, as Caffe's Net::Init builds it.

Init, step by step (src/caffe/net.cpp):
  1. filter layers by the NetState (phase, level, stages) and their include/exclude rules;
  2. insert Split layers for every blob read by more than one consumer (a top with a loss
     weight counts as a consumer); split tops are named `<blob>_<layer>_<i>_split_<k>`;
  3. create each layer, wire bottoms and tops by name (a top named like the bottom at the same
     index is computed in place; layers with AutoTopBlobs get anonymous tops), set it up, and
     record loss weights;
  4. decide which layers need backward: a layer does when a bottom needs it or a parameter has
     lr_mult != 0; then, walking backwards, layers that do not lead to a loss, or whose tops
     no consumer propagates into, are pruned; `force_backward` turns everything back on;
  5. parameters named by `param { name }` are shared: the first layer that uses a name owns the
     blob, later layers alias its data and diff (so their gradients accumulate in the owner),
     and lr_mult / decay_mult come from the owner unless only a sharer sets them.
The tops nobody consumes are the net outputs (sorted by name, Caffe's std::set order); the
tops of Input layers are the net inputs.

Public attributes and methods follow pycaffe (see caffe_lite/pycaffe.py) and the solver
contract in docs/ARCHITECTURE.md.
"""
import copy
import os
from collections import OrderedDict

import numpy as np
from google.protobuf import text_format

from .blob import Blob
from .common import TRAIN
from .errors import CaffeError
from .io.binary import read_any_net, write_binary
from .io.blobs import array_to_blob_proto, blob_proto_to_array, blob_shape
from .io.hdf5 import read_net_hdf5, write_net_hdf5
from .io.netstate import filter_net
from .io.prototxt import read_net_param
from .io.upgrade import net_needs_upgrade, upgrade_net_param
from .kernels.gemm import blas_single_threaded
from .layers import create_layer
from .log import LOG
from .proto import caffe_pb2
from .pycaffe import PycaffeNet


# --- Caffe's InsertSplits ----------------------------------------------------------------
def split_layer_name(layer_name, blob_name, blob_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split"


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split_{split_idx}"


def _split_layer(layer_name, blob_name, blob_idx, count, loss_weight):
    lp = caffe_pb2.LayerParameter(name=split_layer_name(layer_name, blob_name, blob_idx),
                                  type="Split", bottom=[blob_name])
    for k in range(count):
        lp.top.append(split_blob_name(layer_name, blob_name, blob_idx, k))
        if loss_weight:
            lp.loss_weight.append(loss_weight if k == 0 else 0.0)
    return lp


def insert_splits(param, where=None):
    """Caffe's InsertSplits. Returns (new NetParameter, origin) where origin[i] is the index in
    `param.layer` of new layer i, or None for an inserted Split layer.

    `where(i)` gives the (path, line) of layer i for error messages."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    last_top = {}            # blob name -> (layer index, top index) that last produced it
    source_of = {}           # (layer, bottom index) -> (layer, top index)
    consumers = {}           # (layer, top index) -> number of uses
    loss_weight_of = {}      # (layer, top index) -> explicit loss weight
    layer_names = {-1: "input"}
    for i, lp in enumerate(param.layer):
        layer_names[i] = lp.name
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                path, line = where(i) if where else (None, None)
                raise CaffeError(f"Unknown bottom blob '{name}' (layer '{lp.name}', "
                                 f"bottom index {j})", path=path, line=line)
            src = last_top[name]
            source_of[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        # A top used as a loss counts as a consumer, as Caffe does.
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_weight_of[src] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                consumers[src] = consumers.get(src, 0) + 1

    origin = []
    split_index = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        origin.append(i)
        for j in range(len(new.bottom)):
            src = source_of[(i, j)]
            if consumers.get(src, 0) > 1:
                k = split_index.get(src, 0)
                split_index[src] = k + 1
                new.bottom[j] = split_blob_name(layer_names[src[0]], new.bottom[j], src[1], k)
        for j in range(len(new.top)):
            count = consumers.get((i, j), 0)
            if count > 1:
                weight = loss_weight_of.get((i, j), 0.0)
                out.layer.add().CopyFrom(_split_layer(lp.name, new.top[j], j, count, weight))
                origin.append(None)
                if weight:
                    del new.loss_weight[:]
                    split_index[(i, j)] = split_index.get((i, j), 0) + 1
    return out, origin


# --- helpers ---------------------------------------------------------------------------
def shape_string(shape):
    """Caffe's Blob::shape_string: '4 3 13 11 (1716)'."""
    count = int(np.prod(shape, dtype=np.int64))
    return "".join(f"{d} " for d in shape) + f"({count})"


def _proto_shape_equals(shape, bp):
    """Caffe's Blob::ShapeEquals: legacy 4-d protos compare against the shape padded with
    leading 1s (Caffe's LegacyShape), so old (1, 1, M, N) weights load into (M, N) blobs."""
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") \
            or bp.HasField("width"):
        if len(shape) > 4:
            return False
        legacy = (1,) * (4 - len(shape)) + tuple(shape)
        return legacy == (bp.num, bp.channels, bp.height, bp.width)
    return tuple(bp.shape.dim) == tuple(shape)


def _copy_proto_into(blob, bp, what):
    """Caffe's Blob::FromProto without reshape: data, and the diff when the proto has one."""
    blob.data[...] = blob_proto_to_array(bp, name=what).reshape(blob.shape)
    diff = blob_proto_to_array(bp, "diff", name=what)
    if diff is not None:
        blob.diff[...] = diff.reshape(blob.shape)


def _layer_sources(original, filtered):
    """Index in `original.layer` of each layer of `filtered` (filtering keeps the order)."""
    out = []
    k = 0
    layers = original.layer
    for lp in filtered.layer:
        while k < len(layers) and layers[k] != lp:
            k += 1
        out.append(k if k < len(layers) else None)
        k += 1
    return out


class Net(PycaffeNet):
    """A Caffe net. Forms (pycaffe's included):

      Net(model, phase)                 Net(model, weights, phase)
      Net(model, phase, weights=path)   Net(param=net_parameter, phase=TEST)
      Net(model, phase=TRAIN, level=0, stages=(), dtype=np.float32)
    `model` is a prototxt path or a NetParameter; `weights` a caffemodel (binary or .h5).
    """

    def __init__(self, model=None, *args, weights=None, phase=None, param=None, level=None,
                 stages=(), dtype=np.float32):
        for arg in args:
            if isinstance(arg, (int, np.integer)) and not isinstance(arg, bool):
                if phase is not None:
                    raise TypeError("Net(): phase given twice")
                phase = int(arg)
            elif isinstance(arg, (str, os.PathLike)):
                if weights is not None:
                    raise TypeError("Net(): weights given twice")
                weights = arg
            elif arg is None:
                continue
            else:
                raise TypeError(f"Net(): unexpected argument {arg!r}")
        if isinstance(model, caffe_pb2.NetParameter):
            param, model = model, None
        self.dtype = np.dtype(dtype)
        self.source = None
        lines = None
        if model is not None:
            param, lines = read_net_param(str(model), with_lines=True)
            self.source = str(model)
            if phase is None:
                phase = TRAIN
            if level is None:
                level = 0           # Net(param_file, phase, level = 0, stages) sets it
        elif param is None:
            raise TypeError("Net() needs a model path or param=NetParameter")
        else:
            param = copy.deepcopy(param)
            if net_needs_upgrade(param):
                upgrade_net_param(param)
        if phase is not None:
            param.state.phase = phase
        if level is not None:
            param.state.level = int(level)
        for stage in ([stages] if isinstance(stages, str) else (stages or ())):
            param.state.stage.append(stage)
        self._init(param, lines)
        if weights is not None:
            self.copy_from(weights)

    # --- Net::Init -----------------------------------------------------------------------
    def _init(self, in_param, lines):
        self.phase = in_param.state.phase
        filtered = filter_net(in_param, in_param.state, self.source, lines)
        sources = _layer_sources(in_param, filtered)

        def where(i):
            k = sources[i] if i is not None else None
            line = lines[k] if (lines is not None and k is not None and k < len(lines)) \
                else None
            return (self.source, line) if self.source else (None, None)

        LOG.info("Initializing net from parameters: \n%s",
                 text_format.MessageToString(filtered))
        param, origin = insert_splits(filtered, where)
        self.name = param.name
        self._where = [where(o) if o is not None else (self.source, None) for o in origin]

        self.layers = []
        self.layer_names = []
        self._blobs = []
        self._blob_names = []
        self.blob_need_backward = []
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_id_vecs, self.top_id_vecs = [], []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self.param_id_vecs = []
        self._blob_loss_weights = []
        self._input_blob_indices = []
        # parameters: every layer's blobs, then the unique (owned) ones
        self._params = []
        self.param_owners = []
        self.param_layer_indices = []
        self.param_display_names = []
        self._param_names_index = {}
        self.learnable_params = []
        self.learnable_param_ids = []
        self.learnable_param_owners = []
        self.params_lr = []
        self.params_weight_decay = []
        self.param_specs = []
        self._has_params_lr = []
        self._has_params_decay = []

        name_to_idx = {}
        available = set()
        memory_used = 0
        for layer_id, lp in enumerate(param.layer):
            path, line = self._where[layer_id]
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise CaffeError(f"layer '{lp.name}': propagate_down must be specified either "
                                 f"0 or bottom_size ({len(lp.bottom)}) times, got "
                                 f"{len(lp.propagate_down)}", path=path, line=line)
            # The layer gets its own copy, as in Caffe (BatchNorm, e.g., appends param specs).
            own = caffe_pb2.LayerParameter()
            own.CopyFrom(lp)
            layer = create_layer(own, lp.phase, self.dtype,
                                 where=(path, line) if path else None)
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            LOG.info("Creating Layer %s", lp.name)
            self.bottom_vecs.append([])
            self.top_vecs.append([])
            self.bottom_id_vecs.append([])
            self.top_id_vecs.append([])
            self.bottom_need_backward.append([])
            self.param_id_vecs.append([])
            need_backward = False

            for bottom_id, name in enumerate(lp.bottom):
                if name not in available:
                    raise CaffeError(f"Unknown bottom blob '{name}' (layer '{lp.name}', "
                                     f"bottom index {bottom_id})", path=path, line=line)
                blob_id = name_to_idx[name]
                LOG.info("%s <- %s", lp.name, name)
                self.bottom_vecs[layer_id].append(self._blobs[blob_id])
                self.bottom_id_vecs[layer_id].append(blob_id)
                available.discard(name)
                need = self.blob_need_backward[blob_id]
                if len(lp.propagate_down):
                    need = bool(lp.propagate_down[bottom_id])
                self.bottom_need_backward[layer_id].append(need)
                need_backward |= self.blob_need_backward[blob_id]

            for top_id in range(len(lp.top)):
                self._append_top(lp, layer_id, top_id, available, name_to_idx)
                if lp.type == "Input":
                    self._input_blob_indices.append(len(self._blobs) - 1)
            if layer.auto_top_blobs:
                needed = max(layer.min_top or 0, layer.exact_num_top or 0)
                for top_id in range(len(lp.top), needed):
                    self._append_top(lp, layer_id, top_id, None, None)

            try:
                layer.setup(self.bottom_vecs[layer_id], self.top_vecs[layer_id])
            except CaffeError as err:
                if err.path is None and path is not None:
                    raise CaffeError(err.bare_message, path=path, line=line) from err
                raise
            LOG.info("Setting up %s", lp.name)
            for top_id, top in enumerate(self.top_vecs[layer_id]):
                blob_id = self.top_id_vecs[layer_id][top_id]
                if len(self._blob_loss_weights) <= blob_id:
                    self._blob_loss_weights.extend(
                        [0.0] * (blob_id + 1 - len(self._blob_loss_weights)))
                weight = layer.loss(top_id)
                self._blob_loss_weights[blob_id] = weight
                LOG.info("Top shape: %s", shape_string(top.shape))
                if weight:
                    LOG.info("    with loss weight %g", weight)
                memory_used += top.count
            LOG.info("Memory required for data: %d", memory_used * self.dtype.itemsize)

            num_param_blobs = len(layer.blobs)
            if len(lp.param) > num_param_blobs:
                raise CaffeError(f"Too many params specified for layer {lp.name} "
                                 f"({len(lp.param)} param specs, {num_param_blobs} blobs)",
                                 path=path, line=line)
            if len(layer.param_propagate_down) != num_param_blobs:
                layer.param_propagate_down = [True] * num_param_blobs
            for param_id in range(num_param_blobs):
                spec = lp.param[param_id] if param_id < len(lp.param) else caffe_pb2.ParamSpec()
                need = spec.lr_mult != 0
                need_backward |= need
                layer.param_propagate_down[param_id] = need
            for param_id in range(num_param_blobs):
                self._append_param(layer_id, param_id)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for blob_id in self.top_id_vecs[layer_id]:
                    self.blob_need_backward[blob_id] = True

        self._prune_backward()
        if param.force_backward:
            for layer_id, layer in enumerate(self.layers):
                self.layer_need_backward[layer_id] = True
                for bottom_id, blob_id in enumerate(self.bottom_id_vecs[layer_id]):
                    need = (self.bottom_need_backward[layer_id][bottom_id]
                            or layer.allow_force_backward(bottom_id))
                    self.bottom_need_backward[layer_id][bottom_id] = need
                    self.blob_need_backward[blob_id] = self.blob_need_backward[blob_id] or need
                layer.param_propagate_down = [True] * len(layer.blobs)

        self._output_blob_indices = []
        for name in sorted(available):
            LOG.info("This network produces output %s", name)
            self._output_blob_indices.append(name_to_idx[name])
        self._blob_names_index = {n: i for i, n in enumerate(self._blob_names)}
        # first match, as the linear searches of CopyTrainedLayersFrom / ShareTrainedLayersWith
        self._layer_names_index = {}
        for i, n in enumerate(self.layer_names):
            self._layer_names_index.setdefault(n, i)
        self._share_weights()
        self.debug_info = bool(param.debug_info)
        self.net_param = param
        self._build_views()
        LOG.info("Network initialization done.")

    def _append_top(self, lp, layer_id, top_id, available, name_to_idx):
        name = lp.top[top_id] if top_id < len(lp.top) else "(automatic)"
        path, line = self._where[layer_id]
        if name_to_idx is not None and top_id < len(lp.bottom) and name == lp.bottom[top_id]:
            LOG.info("%s -> %s (in-place)", lp.name, name)
            blob_id = name_to_idx[name]
            self.top_vecs[layer_id].append(self._blobs[blob_id])
            self.top_id_vecs[layer_id].append(blob_id)
        elif name_to_idx is not None and name in name_to_idx:
            raise CaffeError(f"Top blob '{name}' produced by multiple sources "
                             f"(layer '{lp.name}')", path=path, line=line)
        else:
            LOG.info("%s -> %s", lp.name, name)
            blob = Blob((), self.dtype)
            blob_id = len(self._blobs)
            self._blobs.append(blob)
            self._blob_names.append(name)
            self.blob_need_backward.append(False)
            if name_to_idx is not None:
                name_to_idx[name] = blob_id
            self.top_id_vecs[layer_id].append(blob_id)
            self.top_vecs[layer_id].append(blob)
        if available is not None:
            available.add(name)

    def _append_param(self, layer_id, param_id):
        layer = self.layers[layer_id]
        lp = layer.param          # the layer's own copy, as Caffe's AppendParam reads it
        path, line = self._where[layer_id]
        specs = lp.param
        param_name = specs[param_id].name if param_id < len(specs) else ""
        self.param_display_names.append(param_name or str(param_id))
        net_param_id = len(self._params)
        blob = layer.blobs[param_id]
        self._params.append(blob)
        self.param_id_vecs[layer_id].append(net_param_id)
        self.param_layer_indices.append((layer_id, param_id))
        spec = specs[param_id] if param_id < len(specs) else caffe_pb2.ParamSpec()
        if not param_name or param_name not in self._param_names_index:
            # This layer owns the blob: it is anonymous or the first use of its name.
            self.param_owners.append(-1)
            if param_name:
                self._param_names_index[param_name] = net_param_id
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(blob)
            self.learnable_param_owners.append((layer_id, param_id))
            self._has_params_lr.append(spec.HasField("lr_mult"))
            self._has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(float(spec.lr_mult))
            self.params_weight_decay.append(float(spec.decay_mult))
            own = caffe_pb2.ParamSpec()
            own.CopyFrom(spec)
            self.param_specs.append(own)
            return
        owner_net_id = self._param_names_index[param_name]
        self.param_owners.append(owner_net_id)
        owner_layer_id, owner_param_id = self.param_layer_indices[owner_net_id]
        owner_name = self.layer_names[owner_layer_id]
        LOG.info("Sharing parameters '%s' owned by layer '%s', param index %d",
                 param_name, owner_name, owner_param_id)
        owner = self.layers[owner_layer_id].blobs[owner_param_id]
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if blob.count != owner.count:
                raise CaffeError(
                    f"Cannot share param '{param_name}' owned by layer '{owner_name}' with "
                    f"layer '{lp.name}'; count mismatch.  Owner layer param shape is "
                    f"{shape_string(owner.shape)}; sharing layer shape is "
                    f"{shape_string(blob.shape)}", path=path, line=line)
        elif blob.shape != owner.shape:
            raise CaffeError(
                f"Cannot share param '{param_name}' owned by layer '{owner_name}' with "
                f"layer '{lp.name}'; shape mismatch.  Owner layer param shape is "
                f"{shape_string(owner.shape)}; sharing layer expects shape "
                f"{shape_string(blob.shape)}", path=path, line=line)
        lid = self.learnable_param_ids[owner_net_id]
        self.learnable_param_ids.append(lid)
        if spec.HasField("lr_mult"):
            if self._has_params_lr[lid]:
                if spec.lr_mult != self.params_lr[lid]:
                    raise CaffeError(f"Shared param '{param_name}' has mismatched lr_mult "
                                     f"({spec.lr_mult} in layer '{lp.name}', "
                                     f"{self.params_lr[lid]} in its owner)",
                                     path=path, line=line)
            else:
                self._has_params_lr[lid] = True
                self.params_lr[lid] = float(spec.lr_mult)
                self.param_specs[lid].lr_mult = spec.lr_mult
        if spec.HasField("decay_mult"):
            if self._has_params_decay[lid]:
                if spec.decay_mult != self.params_weight_decay[lid]:
                    raise CaffeError(f"Shared param '{param_name}' has mismatched decay_mult "
                                     f"({spec.decay_mult} in layer '{lp.name}', "
                                     f"{self.params_weight_decay[lid]} in its owner)",
                                     path=path, line=line)
            else:
                self._has_params_decay[lid] = True
                self.params_weight_decay[lid] = float(spec.decay_mult)
                self.param_specs[lid].decay_mult = spec.decay_mult

    def _prune_backward(self):
        """Skip backward for layers that do not lead to a loss or whose tops nobody
        propagates into (Caffe's second pass over the layers, last to first)."""
        under_loss = set()
        skip_backprop = set()
        for layer_id in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[layer_id]
            contributes = False
            skip = True
            for top_id, blob_id in enumerate(self.top_id_vecs[layer_id]):
                name = self._blob_names[blob_id]
                if layer.loss(top_id) or name in under_loss:
                    contributes = True
                if name not in skip_backprop:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[layer_id] and skip:
                self.layer_need_backward[layer_id] = False
                self.bottom_need_backward[layer_id] = \
                    [False] * len(self.bottom_need_backward[layer_id])
            if not contributes:
                self.layer_need_backward[layer_id] = False
            if self.layer_need_backward[layer_id]:
                LOG.info("%s needs backward computation.", self.layer_names[layer_id])
            else:
                LOG.info("%s does not need backward computation.", self.layer_names[layer_id])
            for bottom_id, blob_id in enumerate(self.bottom_id_vecs[layer_id]):
                name = self._blob_names[blob_id]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[layer_id][bottom_id] = False
                if not self.bottom_need_backward[layer_id][bottom_id]:
                    skip_backprop.add(name)

    def _share_weights(self):
        for net_id, owner in enumerate(self.param_owners):
            if owner >= 0:
                self._params[net_id].share_data(self._params[owner])
                self._params[net_id].share_diff(self._params[owner])

    def _build_views(self):
        self.blobs = OrderedDict(zip(self._blob_names, self._blobs))
        self.params = OrderedDict((name, layer.blobs)
                                  for name, layer in zip(self.layer_names, self.layers)
                                  if layer.blobs)
        self.layer_dict = OrderedDict(zip(self.layer_names, self.layers))
        self.inputs = [self._blob_names[i] for i in self._input_blob_indices]
        self.outputs = [self._blob_names[i] for i in self._output_blob_indices]

    # --- forward / backward ---------------------------------------------------------------
    def forward_from_to(self, start, end):
        """Run layers start..end (inclusive); returns the summed weighted loss."""
        if start < 0 or end >= len(self.layers):
            raise IndexError(f"forward_from_to({start}, {end}) out of range for "
                             f"{len(self.layers)} layers")
        loss = 0.0
        with blas_single_threaded():
            for i in range(start, end + 1):
                loss += self.layers[i].forward(self.bottom_vecs[i], self.top_vecs[i])
                if self.debug_info:
                    self._forward_debug_info(i)
        return loss

    def forward_from(self, start):
        return self.forward_from_to(start, len(self.layers) - 1)

    def forward_to(self, end):
        return self.forward_from_to(0, end)

    def forward_prefilled(self):
        """Forward the whole net on the data already in the input blobs; returns the loss."""
        return self.forward_from_to(0, len(self.layers) - 1)

    def backward_from_to(self, start, end):
        """Backward through layers start down to end (inclusive)."""
        if end < 0 or start >= len(self.layers):
            raise IndexError(f"backward_from_to({start}, {end}) out of range for "
                             f"{len(self.layers)} layers")
        with blas_single_threaded():
            for i in range(start, end - 1, -1):
                if self.layer_need_backward[i]:
                    self.layers[i].backward(self.top_vecs[i], self.bottom_need_backward[i],
                                            self.bottom_vecs[i])
                    if self.debug_info:
                        self._backward_debug_info(i)

    def backward_from(self, start):
        self.backward_from_to(start, 0)

    def backward_to(self, end):
        self.backward_from_to(len(self.layers) - 1, end)

    def backward_all(self):
        """Caffe's Net::Backward: the whole net, then the parameter norms under debug_info."""
        self.backward_from_to(len(self.layers) - 1, 0)
        if self.debug_info:
            asum_data = sum(p.asum_data() for p in self.learnable_params)
            asum_diff = sum(p.asum_diff() for p in self.learnable_params)
            l2_data = np.sqrt(sum(p.sumsq_data() for p in self.learnable_params))
            l2_diff = np.sqrt(sum(p.sumsq_diff() for p in self.learnable_params))
            LOG.error("    [Backward] All net params (data, diff): L1 norm = (%g, %g); "
                      "L2 norm = (%g, %g)", asum_data, asum_diff, l2_data, l2_diff)

    def forward_backward(self):
        """Forward then backward; returns the loss (Caffe's ForwardBackward)."""
        loss = self.forward_prefilled()
        self.backward_all()
        return loss

    # pycaffe's C++ bindings
    def _forward(self, start, end):
        return self.forward_from_to(start, end)

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    def reshape(self):
        for layer, bottom, top in zip(self.layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)

    # --- debug info -----------------------------------------------------------------------
    def _forward_debug_info(self, layer_id):
        name = self.layer_names[layer_id]
        for blob, blob_id in zip(self.top_vecs[layer_id], self.top_id_vecs[layer_id]):
            LOG.info("    [Forward] Layer %s, top blob %s data: %g", name,
                     self._blob_names[blob_id], blob.asum_data() / max(blob.count, 1))
        for blob, net_id in zip(self.layers[layer_id].blobs, self.param_id_vecs[layer_id]):
            LOG.info("    [Forward] Layer %s, param blob %s data: %g", name,
                     self.param_display_names[net_id], blob.asum_data() / max(blob.count, 1))

    def _backward_debug_info(self, layer_id):
        name = self.layer_names[layer_id]
        for bottom_id, blob in enumerate(self.bottom_vecs[layer_id]):
            if not self.bottom_need_backward[layer_id][bottom_id]:
                continue
            blob_name = self._blob_names[self.bottom_id_vecs[layer_id][bottom_id]]
            LOG.info("    [Backward] Layer %s, bottom blob %s diff: %g", name, blob_name,
                     blob.asum_diff() / max(blob.count, 1))
        layer = self.layers[layer_id]
        for param_id, blob in enumerate(layer.blobs):
            if not layer.param_propagate_down[param_id]:
                continue
            LOG.info("    [Backward] Layer %s, param blob %d diff: %g", name, param_id,
                     blob.asum_diff() / max(blob.count, 1))

    def update_debug_info(self, net_param_id):
        blob = self._params[net_param_id]
        owner = self.param_owners[net_param_id]
        layer_name = self.layer_names[self.param_layer_indices[net_param_id][0]]
        display = self.param_display_names[net_param_id]
        diff = blob.asum_diff() / max(blob.count, 1)
        if owner < 0:
            LOG.info("    [Update] Layer %s, param %s data: %g; diff: %g", layer_name, display,
                     blob.asum_data() / max(blob.count, 1), diff)
        else:
            owner_layer = self.layer_names[self.param_layer_indices[owner][0]]
            LOG.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) "
                     "diff: %g", layer_name, display, owner_layer,
                     self.param_display_names[owner], diff)

    # --- parameters -----------------------------------------------------------------------
    def clear_param_diffs(self):
        for p in self.learnable_params:
            p.diff[...] = 0

    def update(self):
        for p in self.learnable_params:
            p.update()

    def share_trained_layers_with(self, other):
        """Alias the parameter data of same-named layers of `other` (a test net shares the
        train net's weights this way)."""
        for source_name, source in zip(other.layer_names, other.layers):
            target_id = self._layer_names_index.get(source_name)
            if target_id is None:
                LOG.info("Ignoring source layer %s", source_name)
                continue
            target = self.layers[target_id].blobs
            if len(target) != len(source.blobs):
                raise CaffeError(f"Incompatible number of blobs for layer {source_name}: "
                                 f"source has {len(source.blobs)}, target has {len(target)}")
            for j, (t, s) in enumerate(zip(target, source.blobs)):
                if t.shape != s.shape:
                    raise CaffeError(
                        f"Cannot share param {j} weights from layer '{source_name}'; shape "
                        f"mismatch.  Source param shape is {shape_string(s.shape)}; target "
                        f"param shape is {shape_string(t.shape)}")
                t.share_data(s)

    share_with = share_trained_layers_with

    def copy_trained_layers_from(self, param, source=None):
        """Copy parameters from a NetParameter (a caffemodel), matching layers by name."""
        where = f" (from {source})" if source else ""
        layers = param.layer if len(param.layer) else param.layers
        for src in layers:
            target_id = self._layer_names_index.get(src.name)
            if target_id is None:
                LOG.info("Ignoring source layer %s", src.name)
                continue
            target = self.layers[target_id].blobs
            if len(target) != len(src.blobs):
                raise CaffeError(f"Incompatible number of blobs for layer {src.name}{where}: "
                                 f"source has {len(src.blobs)}, target has {len(target)}")
            for j, (t, bp) in enumerate(zip(target, src.blobs)):
                if not _proto_shape_equals(t.shape, bp):
                    raise CaffeError(
                        f"Cannot copy param {j} weights from layer '{src.name}'{where}; shape "
                        f"mismatch.  Source param shape is {shape_string(blob_shape(bp))}; "
                        f"target param shape is {shape_string(t.shape)}. To learn this "
                        f"layer's parameters from scratch rather than copying from a saved "
                        f"net, rename the layer.")
                _copy_proto_into(t, bp, f"layer '{src.name}' param {j}{where}")

    def copy_from(self, path):
        """Load trained weights: an HDF5 caffemodel when the name ends in .h5, else binary."""
        path = str(path)
        if path.endswith(".h5"):
            self._copy_from_hdf5(path)
            return
        self.copy_trained_layers_from(read_any_net(path), source=path)

    def _copy_from_hdf5(self, path):
        """Caffe's CopyTrainedLayersFromHDF5: /data/<layer>/<j>; a missing dataset is fine only
        for a parameter shared from another layer (ToHDF5 writes owners only)."""
        for name, arrays in read_net_hdf5(path):
            target_id = self._layer_names_index.get(name)
            if target_id is None:
                LOG.info("Ignoring source layer %s", name)
                continue
            target = self.layers[target_id].blobs
            held = sum(a is not None for a in arrays)
            if len(arrays) > len(target):
                raise CaffeError(f"Incompatible number of blobs for layer {name} (from "
                                 f"{path}): source has {held}, target has {len(target)}")
            for j, blob in enumerate(target):
                arr = arrays[j] if j < len(arrays) else None
                if arr is None:
                    if self.param_owners[self.param_id_vecs[target_id][j]] != -1:
                        continue
                    raise CaffeError(f"Incompatible number of blobs for layer {name} (from "
                                     f"{path}): param {j} is missing")
                if arr.shape != blob.shape:
                    raise CaffeError(
                        f"Cannot copy param {j} weights from layer '{name}' (from {path}); "
                        f"shape mismatch.  Source param shape is {shape_string(arr.shape)}; "
                        f"target param shape is {shape_string(blob.shape)}")
                blob.data[...] = arr

    load_hdf5 = _copy_from_hdf5

    def to_proto(self, write_diff=False):
        """The net with its parameters as a NetParameter (Caffe's Net::ToProto)."""
        double = self.dtype == np.float64
        out = caffe_pb2.NetParameter(name=self.name)
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.param)
            del lp.blobs[:]
            for blob in layer.blobs:
                lp.blobs.add().CopyFrom(
                    array_to_blob_proto(blob.data, blob.diff if write_diff else None, double))
        return out

    def save(self, path, write_diff=False):
        """Write a binary caffemodel."""
        write_binary(str(path), self.to_proto(write_diff))

    def save_hdf5(self, path, write_diff=False):
        """Write Caffe's HDF5 caffemodel: /data/<layer>/<j> for the params each layer owns,
        /diff/<layer>/<j> for every param with write_diff."""
        layers, diffs = [], []
        for layer_id, (name, layer) in enumerate(zip(self.layer_names, self.layers)):
            owned = [self.param_owners[net_id] == -1 for net_id in self.param_id_vecs[layer_id]]
            layers.append((name, [b.data if own else None
                                  for b, own in zip(layer.blobs, owned)]))
            diffs.append((name, [b.diff for b in layer.blobs]))
        write_net_hdf5(str(path), layers, diffs if write_diff else None)

    # --- lookups --------------------------------------------------------------------------
    def has_blob(self, name):
        return name in self._blob_names_index

    def blob_by_name(self, name):
        i = self._blob_names_index.get(name)
        if i is None:
            LOG.warning("Unknown blob name %s", name)
            return None
        return self._blobs[i]

    def has_layer(self, name):
        return name in self._layer_names_index

    def layer_by_name(self, name):
        i = self._layer_names_index.get(name)
        if i is None:
            LOG.warning("Unknown layer name %s", name)
            return None
        return self.layers[i]

    @property
    def input_blobs(self):
        return [self._blobs[i] for i in self._input_blob_indices]

    @property
    def output_blobs(self):
        return [self._blobs[i] for i in self._output_blob_indices]

    def __repr__(self):
        return f"Net(name={self.name!r}, layers={len(self.layers)}, phase={self.phase})"
