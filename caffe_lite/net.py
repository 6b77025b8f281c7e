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
from . import compiler_pages, memory_guard, net_fusion
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
from . import net_hooks
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


def _shape_mismatch(layer_name, index, where, source_shape, target_shape):
    return (f"Cannot copy param {index} weights from layer '{layer_name}'{where}; shape "
            f"mismatch.  Source param shape is {shape_string(source_shape)}; target param "
            f"shape is {shape_string(target_shape)}. To learn this layer's parameters from "
            f"scratch rather than copying from a saved net, rename the layer.")


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


# --- the net's records ------------------------------------------------------------------
# data layers that read a file: the parameter message whose `source` names it
_DATA_SOURCES = {"Data": "data_param", "ImageData": "image_data_param",
                 "HDF5Data": "hdf5_data_param", "WindowData": "window_data_param"}


class LayerRecord:
    """One layer and its wiring (Caffe's per-layer vectors: bottom_vecs_, top_id_vecs_, ...)."""
    __slots__ = ("layer", "name", "where", "bottoms", "tops", "bottom_ids", "top_ids",
                 "bottom_need_backward", "need_backward", "param_ids")

    def __init__(self, layer, name, where):
        self.layer, self.name, self.where = layer, name, where
        self.bottoms, self.tops = [], []
        self.bottom_ids, self.top_ids = [], []
        self.bottom_need_backward = []
        self.need_backward = False
        self.param_ids = []          # net param ids of the layer's blobs


class BlobRecord:
    """One named blob of the net."""
    __slots__ = ("blob", "name", "need_backward", "loss_weight")

    def __init__(self, blob, name):
        self.blob, self.name = blob, name
        self.need_backward = False
        self.loss_weight = 0.0


class ParamRecord:
    """One blob of one layer as a net param; `owner` is the net param id it shares, or -1."""
    __slots__ = ("blob", "layer_id", "index", "display_name", "owner", "learnable_id")

    def __init__(self, blob, layer_id, index, display_name):
        self.blob, self.layer_id, self.index = blob, layer_id, index
        self.display_name = display_name
        self.owner = -1
        self.learnable_id = None


class LearnableRecord:
    """A blob the net owns (Caffe's learnable_params_): the owner's ParamSpec (completed by
    its sharers' lr_mult / decay_mult) and whether it is a state blob. A state blob keeps its
    place in the solverstate history but reports lr_mult 0 and is never updated."""
    __slots__ = ("blob", "layer_id", "index", "spec", "is_state")

    def __init__(self, blob, layer_id, index, spec, is_state):
        self.blob, self.layer_id, self.index = blob, layer_id, index
        self.spec = caffe_pb2.ParamSpec()
        self.spec.CopyFrom(spec)
        self.is_state = is_state

    @property
    def lr_mult(self):
        return 0.0 if self.is_state else float(self.spec.lr_mult)


class Net(PycaffeNet):
    """A Caffe net. Forms (pycaffe's included):

      Net(model, phase)                 Net(model, weights, phase)
      Net(model, phase, weights=path)   Net(param=net_parameter, phase=TEST)
      Net(model, phase=TRAIN, level=0, stages=(), dtype=np.float32)
    `model` is a prototxt path or a NetParameter; `weights` a caffemodel (binary or .h5).
    `source=(path, layer lines)` tells a Net built from a parsed `param` where its layers
    were written (read_net_param(path, with_lines=True)), for its error messages.
    `forward_only=True` (also settable later): no backward will follow a forward, so the
    layers keep nothing for one (BatchNorm's x_norm), as PyTorch's inference_mode; a
    backward then raises. A solver's test nets and `caffe-lite test` run so.
    """

    def __init__(self, model=None, *args, weights=None, phase=None, param=None, level=None,
                 stages=(), dtype=np.float32, source=None, max_memory=None,
                 forward_only=False):
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
        self.max_memory = max_memory
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
            if source is not None:
                self.source, lines = str(source[0]), source[1]
        if phase is not None:
            param.state.phase = phase
        if level is not None:
            param.state.level = int(level)
        for stage in ([stages] if isinstance(stages, str) else (stages or ())):
            param.state.stage.append(stage)
        self._init(param, lines)
        self.forward_only = forward_only
        if weights is not None:
            self.copy_from(weights)

    @property
    def forward_only(self):
        return self._forward_only

    @forward_only.setter
    def forward_only(self, value):
        self._forward_only = bool(value)
        for rec in self._layer_records:
            rec.layer.backward_follows = not self._forward_only

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
        self._layer_records = []
        self._blob_records = []
        self._param_records = []
        self._learnable_records = []
        self._param_names_index = {}
        self._input_blob_indices = []

        name_to_idx = {}
        available = set()
        memory_used = 0
        limit = self.max_memory or memory_guard.default_limit()
        with memory_guard.budget(limit) as blobs:
            for layer_id, lp in enumerate(param.layer):
                if blobs is not None:
                    blobs.layer = lp.name
                try:
                    memory_used = self._init_layer(layer_id, lp, origin, where, available,
                                                   name_to_idx, memory_used)
                except memory_guard.BudgetExceeded:
                    rec_where = (where(origin[layer_id]) if origin[layer_id] is not None
                                 else (self.source, None))
                    raise CaffeError(
                        f"layer '{lp.name}' ({lp.type}): the net's blobs need more than "
                        f"{memory_guard.human(limit)} (data and diff, "
                        f"{memory_guard.human(blobs.used)} up to this layer; largest: "
                        f"{blobs.largest()}); the limit is the memory available, or "
                        f"-max_memory", path=rec_where[0], line=rec_where[1]) from None
        self._finish_init(param, available, name_to_idx)

    def _init_layer(self, layer_id, lp, origin, where, available, name_to_idx, memory_used):
        """Create, wire and set up one layer (Net::Init's loop body); the memory so far."""
        rec = self._create_layer(lp, where(origin[layer_id]) if origin[layer_id] is not None
                                 else (self.source, None))
        self._layer_records.append(rec)
        need_backward = self._wire_bottoms(rec, lp, available, name_to_idx)
        for top_id in range(len(lp.top)):
            self._append_top(rec, lp, top_id, available, name_to_idx)
            if lp.type == "Input":
                self._input_blob_indices.append(len(self._blob_records) - 1)
        if rec.layer.auto_top_blobs:
            needed = max(rec.layer.min_top or 0, rec.layer.exact_num_top or 0)
            for top_id in range(len(lp.top), needed):
                self._append_top(rec, lp, top_id, None, None)
        self._setup_layer(rec, lp)
        memory_used += sum(top.count for top in rec.tops)
        LOG.info("Memory required for data: %d", memory_used * self.dtype.itemsize)
        need_backward |= self._append_params(layer_id, rec, lp)
        rec.need_backward = need_backward
        if need_backward:
            for blob_id in rec.top_ids:
                self._blob_records[blob_id].need_backward = True
        return memory_used

    def _finish_init(self, param, available, name_to_idx):
        self._prune_backward()
        if param.force_backward:
            self._force_backward()

        self._output_blob_indices = [name_to_idx[name] for name in sorted(available)]
        for name in sorted(available):
            LOG.info("This network produces output %s", name)
        self._blob_names_index = {b.name: i for i, b in enumerate(self._blob_records)}
        # first match, as the linear searches of CopyTrainedLayersFrom / ShareTrainedLayersWith
        self._layer_names_index = {}
        for i, rec in enumerate(self._layer_records):
            self._layer_names_index.setdefault(rec.name, i)
        self._share_weights()
        self.debug_info = bool(param.debug_info)
        self.net_param = param
        self._build_views()
        self.forward_hooks = []
        for hook in net_hooks.hooks_for(param):
            self.add_forward_hook(hook)
        self._kept_tops = net_fusion.kept_top_layers(self._layer_records)
        self._fusions = net_fusion.find_fusions(self._layer_records, self._kept_tops)
        # passes whose kernels have not loaded yet (compiler_pages.py)
        self._first_passes = {"forward", "backward"}
        LOG.info("Network initialization done.")

    def add_forward_hook(self, hook):
        """Call `hook` (net_hooks.py) around every forward pass from now on."""
        self.forward_hooks.append(hook)
        hook.attach(self)
        return hook

    def _create_layer(self, lp, where):
        path, line = where
        if not lp.HasField("phase"):
            lp.phase = self.phase
        if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
            raise CaffeError(f"layer '{lp.name}': propagate_down must be specified either "
                             f"0 or bottom_size ({len(lp.bottom)}) times, got "
                             f"{len(lp.propagate_down)}", path=path, line=line)
        # The layer gets its own copy, as in Caffe (BatchNorm, e.g., appends param specs).
        own = caffe_pb2.LayerParameter()
        own.CopyFrom(lp)
        layer = create_layer(own, lp.phase, self.dtype, where=where if path else None)
        LOG.info("Creating Layer %s", lp.name)
        return LayerRecord(layer, lp.name, where)

    def _wire_bottoms(self, rec, lp, available, name_to_idx):
        """Connect the layer's bottoms; returns whether one of them needs backward."""
        path, line = rec.where
        need_backward = False
        for bottom_id, name in enumerate(lp.bottom):
            if name not in available:
                raise CaffeError(f"Unknown bottom blob '{name}' (layer '{lp.name}', "
                                 f"bottom index {bottom_id})", path=path, line=line)
            blob_id = name_to_idx[name]
            LOG.info("%s <- %s", lp.name, name)
            blob_rec = self._blob_records[blob_id]
            rec.bottoms.append(blob_rec.blob)
            rec.bottom_ids.append(blob_id)
            available.discard(name)
            need = blob_rec.need_backward
            if len(lp.propagate_down):
                need = bool(lp.propagate_down[bottom_id])
            rec.bottom_need_backward.append(need)
            need_backward |= blob_rec.need_backward
        return need_backward

    def _setup_layer(self, rec, lp):
        path, line = rec.where
        try:
            rec.layer.setup(rec.bottoms, rec.tops)
        except CaffeError as err:
            if path is not None and str(err.path) == str(path):
                raise
            # Keep the message's own file (an LMDB, a mean_file) and add the prototxt
            # line and the layer that asked for it: the user needs both to fix it.
            named = f"layer '{lp.name}' ({lp.type}): "
            message = str(err)
            if not message.startswith(named):
                message = named + message
            raise CaffeError(message, path=path, line=line) from err
        except MemoryError as err:
            raise self._layer_error(rec, f"not enough memory for its blobs ({err})") from err
        except (ValueError, OverflowError) as err:
            # a value of the file that no check caught (a negative dim, a kernel of 2^31):
            # it still gets the file, line and layer, not an internal error
            raise self._layer_error(rec, f"cannot be set up: {err}") from err
        LOG.info("Setting up %s", lp.name)
        for top_id, (top, blob_id) in enumerate(zip(rec.tops, rec.top_ids)):
            weight = rec.layer.loss(top_id)
            self._blob_records[blob_id].loss_weight = weight
            LOG.info("Top shape: %s", shape_string(top.shape))
            if weight:
                LOG.info("    with loss weight %g", weight)

    def _append_top(self, rec, lp, top_id, available, name_to_idx):
        name = lp.top[top_id] if top_id < len(lp.top) else "(automatic)"
        path, line = rec.where
        if name_to_idx is not None and top_id < len(lp.bottom) and name == lp.bottom[top_id]:
            LOG.info("%s -> %s (in-place)", lp.name, name)
            blob_id = name_to_idx[name]
        elif name_to_idx is not None and name in name_to_idx:
            raise CaffeError(f"Top blob '{name}' produced by multiple sources "
                             f"(layer '{lp.name}')", path=path, line=line)
        else:
            LOG.info("%s -> %s", lp.name, name)
            blob_id = len(self._blob_records)
            self._blob_records.append(BlobRecord(Blob((), self.dtype), name))
            if name_to_idx is not None:
                name_to_idx[name] = blob_id
        rec.tops.append(self._blob_records[blob_id].blob)
        rec.top_ids.append(blob_id)
        if available is not None:
            available.add(name)

    def _append_params(self, layer_id, rec, lp):
        """Register the layer's blobs as net params; returns whether one needs backward.

        As Caffe's Net::Init, a blob makes the layer need backward when the NET's copy of its
        ParamSpec has lr_mult != 0, while params_lr and the solver read the layer's own copy
        (which BatchNorm may have completed); a state blob never gets a gradient itself."""
        layer = rec.layer
        num_blobs = len(layer.blobs)
        if len(lp.param) > num_blobs:
            path, line = rec.where
            raise CaffeError(f"Too many params specified for layer {lp.name} "
                             f"({len(lp.param)} param specs, {num_blobs} blobs)",
                             path=path, line=line)
        own_specs = layer.param.param
        need_backward = False
        layer.param_propagate_down = [False] * num_blobs
        for index in range(num_blobs):
            need = index >= len(lp.param) or lp.param[index].lr_mult != 0
            need_backward |= need
            layer.param_propagate_down[index] = need and not layer.is_state_blob(index)
            own = own_specs[index] if index < len(own_specs) else caffe_pb2.ParamSpec()
            self._append_param(layer_id, rec, index, own)
        return need_backward

    def _append_param(self, layer_id, rec, index, spec):
        layer = rec.layer
        path, line = rec.where
        param_name = spec.name
        net_param_id = len(self._param_records)
        blob = layer.blobs[index]
        rec.param_ids.append(net_param_id)
        record = ParamRecord(blob, layer_id, index, param_name or str(index))
        self._param_records.append(record)
        if not param_name or param_name not in self._param_names_index:
            # This layer owns the blob: it is anonymous or the first use of its name.
            if param_name:
                self._param_names_index[param_name] = net_param_id
            record.learnable_id = len(self._learnable_records)
            self._learnable_records.append(
                LearnableRecord(blob, layer_id, index, spec, layer.is_state_blob(index)))
            return
        owner_net_id = self._param_names_index[param_name]
        record.owner = owner_net_id
        owner_record = self._param_records[owner_net_id]
        owner_name = self._layer_records[owner_record.layer_id].name
        LOG.info("Sharing parameters '%s' owned by layer '%s', param index %d",
                 param_name, owner_name, owner_record.index)
        owner = owner_record.blob
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if blob.count != owner.count:
                raise CaffeError(
                    f"Cannot share param '{param_name}' owned by layer '{owner_name}' with "
                    f"layer '{rec.name}'; count mismatch.  Owner layer param shape is "
                    f"{shape_string(owner.shape)}; sharing layer shape is "
                    f"{shape_string(blob.shape)}", path=path, line=line)
        elif blob.shape != owner.shape:
            raise CaffeError(
                f"Cannot share param '{param_name}' owned by layer '{owner_name}' with "
                f"layer '{rec.name}'; shape mismatch.  Owner layer param shape is "
                f"{shape_string(owner.shape)}; sharing layer expects shape "
                f"{shape_string(blob.shape)}", path=path, line=line)
        record.learnable_id = owner_record.learnable_id
        learnable = self._learnable_records[record.learnable_id]
        for field in ("lr_mult", "decay_mult"):
            if not spec.HasField(field):
                continue
            if learnable.spec.HasField(field):
                if getattr(spec, field) != getattr(learnable.spec, field):
                    raise CaffeError(f"Shared param '{param_name}' has mismatched {field} "
                                     f"({getattr(spec, field)} in layer '{rec.name}', "
                                     f"{getattr(learnable.spec, field)} in its owner)",
                                     path=path, line=line)
            else:
                setattr(learnable.spec, field, getattr(spec, field))

    def _prune_backward(self):
        """Skip backward for layers that do not lead to a loss or whose tops nobody
        propagates into (Caffe's second pass over the layers, last to first)."""
        under_loss = set()
        skip_backprop = set()
        for rec in reversed(self._layer_records):
            contributes = False
            skip = True
            for top_id, blob_id in enumerate(rec.top_ids):
                name = self._blob_records[blob_id].name
                if rec.layer.loss(top_id) or name in under_loss:
                    contributes = True
                if name not in skip_backprop:
                    skip = False
                if contributes and not skip:
                    break
            if rec.need_backward and skip:
                rec.need_backward = False
                rec.bottom_need_backward = [False] * len(rec.bottom_need_backward)
            if not contributes:
                rec.need_backward = False
            if rec.need_backward:
                LOG.info("%s needs backward computation.", rec.name)
            else:
                LOG.info("%s does not need backward computation.", rec.name)
            for bottom_id, blob_id in enumerate(rec.bottom_ids):
                name = self._blob_records[blob_id].name
                if contributes:
                    under_loss.add(name)
                else:
                    rec.bottom_need_backward[bottom_id] = False
                if not rec.bottom_need_backward[bottom_id]:
                    skip_backprop.add(name)

    def _force_backward(self):
        """force_backward: every layer runs backward into every bottom it allows, and every
        learnable blob gets its gradient (state blobs never do)."""
        for rec in self._layer_records:
            rec.need_backward = True
            for bottom_id, blob_id in enumerate(rec.bottom_ids):
                need = (rec.bottom_need_backward[bottom_id]
                        or rec.layer.allow_force_backward(bottom_id))
                rec.bottom_need_backward[bottom_id] = need
                blob_rec = self._blob_records[blob_id]
                blob_rec.need_backward = blob_rec.need_backward or need
            layer = rec.layer
            layer.param_propagate_down = [not layer.is_state_blob(i)
                                          for i in range(len(layer.blobs))]

    def _share_weights(self):
        for record in self._param_records:
            if record.owner >= 0:
                owner = self._param_records[record.owner].blob
                record.blob.share_data(owner)
                record.blob.share_diff(owner)

    def _build_views(self):
        """pycaffe's and Caffe's per-layer, per-blob and per-param vectors, read from the
        records (which do not change after Init)."""
        layers, blobs = self._layer_records, self._blob_records
        params, learnables = self._param_records, self._learnable_records
        self.layers = [r.layer for r in layers]
        self.layer_names = [r.name for r in layers]
        self.bottom_vecs = [r.bottoms for r in layers]
        self.top_vecs = [r.tops for r in layers]
        self.bottom_id_vecs = [r.bottom_ids for r in layers]
        self.top_id_vecs = [r.top_ids for r in layers]
        self.bottom_need_backward = [r.bottom_need_backward for r in layers]
        self.layer_need_backward = [r.need_backward for r in layers]
        self.param_id_vecs = [r.param_ids for r in layers]
        self._blob_names = [b.name for b in blobs]
        self._blob_loss_weights = [b.loss_weight for b in blobs]
        self.blob_need_backward = [b.need_backward for b in blobs]
        self.param_owners = [p.owner for p in params]
        self.param_layer_indices = [(p.layer_id, p.index) for p in params]
        self.param_display_names = [p.display_name for p in params]
        self.learnable_params = [p.blob for p in learnables]
        self.learnable_param_owners = [(p.layer_id, p.index) for p in learnables]
        self.learnable_is_state = [p.is_state for p in learnables]
        self.param_specs = [p.spec for p in learnables]
        self.params_lr = [p.lr_mult for p in learnables]
        self.params_weight_decay = [float(p.spec.decay_mult) for p in learnables]
        self.blobs = OrderedDict((b.name, b.blob) for b in blobs)
        self.params = OrderedDict((r.name, r.layer.blobs) for r in layers if r.layer.blobs)
        self.layer_dict = OrderedDict((r.name, r.layer) for r in layers)
        self.inputs = [blobs[i].name for i in self._input_blob_indices]
        self.outputs = [blobs[i].name for i in self._output_blob_indices]

    # --- forward / backward ---------------------------------------------------------------
    def forward_from_to(self, start, end):
        """Run layers start..end (inclusive); returns the summed weighted loss."""
        if start < 0 or end >= len(self._layer_records):
            raise IndexError(f"forward_from_to({start}, {end}) out of range for "
                             f"{len(self._layer_records)} layers")
        loss = 0.0
        hooks = self.forward_hooks
        first = "forward" in self._first_passes
        for layer in self._kept_tops:
            layer.top_kept = not hooks
        with blas_single_threaded():
            if hooks and start == 0:
                for hook in hooks:
                    hook.before_forward(self)
            # hooks and debug_info look at each layer's top: no fusion there (net_fusion.py)
            fusions = self._fusions if not hooks and not self.debug_info else {}
            i = start
            while i <= end:
                rec = self._layer_records[i]
                fusion = fusions.get(i)
                if fusion is not None and (fusion.last > end or (
                        fusion.forward_only and not self._forward_only)):
                    fusion = None
                try:
                    if fusion is None:
                        loss += rec.layer.forward(rec.bottoms, rec.tops)
                    else:
                        fusion.forward(rec)
                except CaffeError as err:
                    raise self.pass_error(i, err) from None
                for hook in hooks:
                    hook.after_layer(self, i)
                if self.debug_info:
                    self._forward_debug_info(i)
                if first:
                    compiler_pages.release()     # the layer's kernels have loaded
                i = i + 1 if fusion is None else fusion.last + 1
        self._first_passes.discard("forward")
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
        if end < 0 or start >= len(self._layer_records):
            raise IndexError(f"backward_from_to({start}, {end}) out of range for "
                             f"{len(self._layer_records)} layers")
        if self._forward_only:
            raise CaffeError(f"net '{self.name}' runs forward only (a solver's test net, "
                             "`caffe-lite test`, or forward_only=True): its forward keeps "
                             "nothing for a backward")
        first = "backward" in self._first_passes
        with blas_single_threaded():
            for i in range(start, end - 1, -1):
                rec = self._layer_records[i]
                if rec.need_backward:
                    rec.layer.backward(rec.tops, rec.bottom_need_backward, rec.bottoms)
                    if self.debug_info:
                        self._backward_debug_info(i)
                    if first:
                        compiler_pages.release()
        self._first_passes.discard("backward")

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
        for rec in self._layer_records:
            rec.layer.reshape(rec.bottoms, rec.tops)

    # --- debug info -----------------------------------------------------------------------
    def _forward_debug_info(self, layer_id):
        rec = self._layer_records[layer_id]
        for blob, blob_id in zip(rec.tops, rec.top_ids):
            LOG.info("    [Forward] Layer %s, top blob %s data: %g", rec.name,
                     self._blob_records[blob_id].name, blob.asum_data() / max(blob.count, 1))
        for blob, net_id in zip(rec.layer.blobs, rec.param_ids):
            LOG.info("    [Forward] Layer %s, param blob %s data: %g", rec.name,
                     self._param_records[net_id].display_name,
                     blob.asum_data() / max(blob.count, 1))

    def _backward_debug_info(self, layer_id):
        rec = self._layer_records[layer_id]
        for bottom_id, blob in enumerate(rec.bottoms):
            if not rec.bottom_need_backward[bottom_id]:
                continue
            blob_name = self._blob_records[rec.bottom_ids[bottom_id]].name
            LOG.info("    [Backward] Layer %s, bottom blob %s diff: %g", rec.name, blob_name,
                     blob.asum_diff() / max(blob.count, 1))
        layer = rec.layer
        for param_id, blob in enumerate(layer.blobs):
            if not layer.param_propagate_down[param_id]:
                continue
            LOG.info("    [Backward] Layer %s, param blob %d diff: %g", rec.name, param_id,
                     blob.asum_diff() / max(blob.count, 1))

    # --- parameters -----------------------------------------------------------------------
    def clear_param_diffs(self):
        for p in self.learnable_params:
            p.diff[...] = 0

    def update(self):
        """w -= diff for every learnable blob; state blobs are never updated."""
        for rec in self._learnable_records:
            if not rec.is_state:
                rec.blob.update()

    def share_trained_layers_with(self, other):
        """Alias the blobs' data of same-named layers of `other` (a test net shares the
        train net's weights and state this way)."""
        for source_name, source in zip(other.layer_names, other.layers):
            rec = self._target_layer(source_name)
            if rec is None:
                continue
            target = rec.layer.blobs
            if len(target) != len(source.blobs):
                raise self._layer_error(rec, f"Incompatible number of blobs for layer "
                                             f"{source_name}: source has "
                                             f"{len(source.blobs)}, target has {len(target)}")
            for j, (t, s) in enumerate(zip(target, source.blobs)):
                if t.shape != s.shape:
                    raise self._layer_error(
                        rec, f"Cannot share param {j} weights from layer '{source_name}'; "
                             f"shape mismatch.  Source param shape is "
                             f"{shape_string(s.shape)}; target param shape is "
                             f"{shape_string(t.shape)}")
                t.share_data(s)

    share_with = share_trained_layers_with

    def copy_trained_layers_from(self, param, source=None, *, ignore_shape_mismatch=False,
                                 count_mismatch_types=("BatchNorm",)):
        """Copy parameters from a NetParameter (a caffemodel), matching layers by name.

        By default Caffe's rules: each layer's blob count must fit (see _check_blob_count) and
        each blob's shape must equal the target's. `ignore_shape_mismatch` is caffe-jacinto's
        lenient load (its solver fields ignore_shape_mismatch / ignore_mismatching_blobs;
        Solver.weight_loading_options says when it applies): a layer whose type is in
        `count_mismatch_types` (None: any layer) may hold more or fewer blobs than the source,
        and the leading ones that both have are copied; a blob whose shape differs is copied
        in memory order when the element counts agree, else skipped with a warning naming
        the layer and blob, keeping its initial values.
        """
        where = f" (from {source})" if source else ""
        layers = param.layer if len(param.layer) else param.layers
        for src in layers:
            rec = self._target_layer(src.name)
            if rec is None:
                continue
            self._check_blob_count(rec, len(src.blobs), where, ignore_shape_mismatch and (
                count_mismatch_types is None or rec.layer.type in count_mismatch_types))
            for j, (t, bp) in enumerate(zip(rec.layer.blobs, src.blobs)):
                what = f"layer '{src.name}' param {j}{where}"
                if not _proto_shape_equals(t.shape, bp):
                    message = _shape_mismatch(src.name, j, where, blob_shape(bp), t.shape)
                    if not ignore_shape_mismatch:
                        raise self._layer_error(rec, message)
                    if int(np.prod(blob_shape(bp), dtype=np.int64)) != t.count:
                        LOG.warning("%s", message)
                        continue
                    LOG.warning("During copy param %d weights from layer '%s'%s; Ignoring "
                                "shape mismatch and copying forcefully.  Source param shape "
                                "is %s; target param shape is %s.", j, src.name, where,
                                shape_string(blob_shape(bp)), shape_string(t.shape))
                _copy_proto_into(t, bp, what)

    def copy_from(self, path, *, ignore_shape_mismatch=False,
                  count_mismatch_types=("BatchNorm",)):
        """Load trained weights: an HDF5 caffemodel when the name ends in .h5, else binary.

        The keywords are copy_trained_layers_from's, for binary caffemodels; HDF5 ones always
        load with Caffe's strict rules, as caffe-jacinto's CopyTrainedLayersFromHDF5 does.
        """
        path = str(path)
        if path.endswith(".h5"):
            self._copy_from_hdf5(path)
            return
        self.copy_trained_layers_from(read_any_net(path), source=path,
                                      ignore_shape_mismatch=ignore_shape_mismatch,
                                      count_mismatch_types=count_mismatch_types)

    def _copy_from_hdf5(self, path):
        """Caffe's CopyTrainedLayersFromHDF5: /data/<layer>/<j>; a missing dataset is fine only
        for a parameter shared from another layer (ToHDF5 writes owners only)."""
        where = f" (from {path})"
        for name, arrays in read_net_hdf5(path):
            rec = self._target_layer(name)
            if rec is None:
                continue
            blobs = rec.layer.blobs
            if len(arrays) > len(blobs):
                self._check_blob_count(rec, len(arrays), where)
            optional = rec.layer.optional_blobs_from
            for j, blob in enumerate(blobs):
                arr = arrays[j] if j < len(arrays) else None
                if arr is None:
                    shared = self._param_records[rec.param_ids[j]].owner != -1
                    if shared or (optional is not None and j >= optional):
                        continue
                    raise self._layer_error(rec, f"Incompatible number of blobs for layer "
                                                 f"{name}{where}: param {j} is missing")
                if arr.shape != blob.shape:
                    raise self._layer_error(rec, _shape_mismatch(name, j, where, arr.shape,
                                                                 blob.shape))
                blob.data[...] = arr

    def _target_layer(self, name):
        layer_id = self._layer_names_index.get(name)
        if layer_id is None:
            LOG.info("Ignoring source layer %s", name)
            return None
        return self._layer_records[layer_id]

    def _check_blob_count(self, rec, count, where, any_count=False):
        """A caffemodel holds every blob of the layer, or (when the layer allows it) at least
        the leading ones before its optional state blobs, which then keep their values.
        `any_count` (caffe-jacinto's lenient load) turns a mismatch into a warning."""
        layer = rec.layer
        total = len(layer.blobs)
        least = total if layer.optional_blobs_from is None else layer.optional_blobs_from
        if least <= count <= total:
            return
        message = (f"Incompatible number of blobs for layer {rec.name}{where}: source has "
                   f"{count}, target has {total}")
        if not any_count:
            raise self._layer_error(rec, message)
        LOG.warning("%s; copying the first %d", message, min(count, total))

    def _layer_error(self, rec, message):
        """A CaffeError at the layer's prototxt line that names the layer."""
        path, line = rec.where
        return CaffeError(f"layer '{rec.name}' ({rec.layer.type}): {message}", path=path,
                          line=line)

    def pass_error(self, index, err):
        """Layer `index`'s CaffeError during a forward pass (a label out of range, say),
        placed at the layer's prototxt line, with the database each bottom read from a data
        layer comes from: the bad value is in that file, not in the net."""
        if err.path is not None:
            return err
        rec = self._layer_records[index]
        notes = []
        for blob_id in rec.bottom_ids:
            creator = next(r for r in self._layer_records if blob_id in r.top_ids)
            field = _DATA_SOURCES.get(creator.layer.type)
            if field is not None:
                source = getattr(getattr(creator.layer.param, field), "source")
                notes.append(f"'{self._blob_records[blob_id].name}' comes from layer "
                             f"'{creator.name}' reading {source}")
        path, line = rec.where
        return CaffeError(err.bare_message + (f" ({'; '.join(notes)})" if notes else ""),
                          path=path, line=line)

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
        return self._blob_records[i].blob

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
        return [self._blob_records[i].blob for i in self._input_blob_indices]

    @property
    def output_blobs(self):
        return [self._blob_records[i].blob for i in self._output_blob_indices]

    def __repr__(self):
        return f"Net(name={self.name!r}, layers={len(self.layers)}, phase={self.phase})"
