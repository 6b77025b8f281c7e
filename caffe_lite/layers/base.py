"""The layer contract, Caffe's Layer<Dtype> in Python.

Life cycle (driven by the Net, or by a test directly):
  layer = SomeLayer(layer_param, phase, dtype)
  layer.setup(bottom, top)        # check counts, layer_setup, reshape, loss weights
  loss = layer.forward(bottom, top)   # reshape, then forward_cpu; returns the weighted loss
  layer.backward(top, propagate_down, bottom)

Rules every layer keeps, so golden parity and the solver line up with Caffe:
  * `reshape` sizes the tops from the bottoms; `forward` calls it every time (as Caffe's
    Layer::Forward does), so it must be cheap when nothing changed.
  * forward writes into top[i].data in place; backward OVERWRITES bottom[i].diff for every
    i with propagate_down[i] true, and ACCUMULATES (+=) into self.blobs[j].diff (the solver
    zeroes parameter diffs; iter_size relies on accumulation) when param_propagate_down[j].
  * self.blobs holds the learnable parameters and state blobs in Caffe's order, so
    caffemodels round-trip. A layer declares which are state (`state_blobs`: BatchNorm's
    statistics, DNS/INQ masks): they are saved, loaded and shared with test nets like any
    blob and keep their place in the solverstate history, but get no gradient and are never
    updated by a solver, whatever their lr_mult. `optional_blobs_from` lets a caffemodel
    that lacks the trailing blobs load (a dense model into a masked layer keeps its masks).
  * Kernels are pure functions in caffe_lite/kernels; a layer only reads its *_param, owns its
    blobs and calls them.
"""
from abc import ABC, abstractmethod

import numpy as np

from ..blob import Blob
from ..common import TRAIN
from ..errors import CaffeError


class Layer(ABC):
    #: the Caffe type string; set by @register
    type = None
    # Declared blob counts (Caffe's ExactNumBottomBlobs & co); None means unchecked.
    exact_num_bottom = None
    min_bottom = None
    max_bottom = None
    exact_num_top = None
    min_top = None
    max_top = None
    equal_num_bottom_top = False
    #: Caffe's AutoTopBlobs: the net creates anonymous tops up to the minimum count
    auto_top_blobs = False
    #: loss layers default to loss_weight 1 on their first top (Caffe's LossLayer)
    is_loss = False
    #: indices into self.blobs of the state blobs (set in layer_setup when it depends on
    #: the param)
    state_blobs = frozenset()
    #: a caffemodel may hold only self.blobs[:optional_blobs_from]; None: all are needed
    optional_blobs_from = None
    #: fn(blob_index, array) -> array: what Convolution, Deconvolution and InnerProduct use
    #: as their weight (0) and bias (1) in forward and backward, while the solver keeps
    #: updating the blobs themselves (caffe-jacinto's quantized shadow weights); None: the blobs
    param_transform = None
    #: whether the layer can apply a ReLU that follows it in place to its own top as it
    #: writes it (Net fuses the two); fused_relu is that ReLU's negative slope during such
    #: a pass, None otherwise
    fuses_relu = False
    fused_relu = None
    #: whether it can also write the ReLU's output to the ReLU's own top (out of place),
    #: fused_relu_top during such a pass
    fuses_relu_apart = False
    fused_relu_top = None
    #: whether the backward reads a copy of the layer's own top taken in forward (BatchNorm's
    #: x_norm); top_kept: Net has proved that nothing writes the top's memory between this
    #: layer's forward and its backward, so the layer may read its top instead of a copy
    copies_top = False
    top_kept = False
    #: whether a backward may follow the forward; False in a forward-only Net (a solver's
    #: test net, `caffe-lite test`), where the forward skips what only a backward reads
    #: (BatchNorm's x_norm, an in-place Scale's copy of its input)
    backward_follows = True

    def __init__(self, param, phase=TRAIN, dtype=np.float32):
        self.param = param
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.blobs = []
        self.param_propagate_down = []
        self.loss_weights = []

    @property
    def name(self):
        return self.param.name

    # --- Caffe's SetUp -------------------------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [not self.is_state_blob(i)
                                         for i in range(len(self.blobs))]
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def layer_setup(self, bottom, top):
        """One-time setup from *_param: create self.blobs, read hyper-parameters."""

    @abstractmethod
    def reshape(self, bottom, top):
        """Size the tops from the bottoms."""

    def forward(self, bottom, top):
        self.reshape(bottom, top)
        self.forward_cpu(bottom, top)
        loss = 0.0
        for t, w in zip(top, self.loss_weights):
            if w:
                # top diff already holds the loss weight (set_loss_weights), as in Caffe
                loss += float(np.dot(t.data.ravel(), t.diff.ravel()))
        return loss

    @abstractmethod
    def forward_cpu(self, bottom, top):
        """Compute the tops' data from the bottoms' data."""

    def backward(self, top, propagate_down, bottom):
        self.backward_cpu(top, propagate_down, bottom)

    def backward_cpu(self, top, propagate_down, bottom):
        """Layers without a gradient (data, accuracy, ...) keep this no-op."""

    # --- loss weights ----------------------------------------------------------------------
    def set_loss_weights(self, top):
        weights = list(self.param.loss_weight)
        if not weights and self.is_loss:
            weights = [1.0]
        if weights and len(weights) != len(top):
            if self.is_loss and len(weights) == 1 and len(top) >= 1:
                weights = weights + [0.0] * (len(top) - 1)
            else:
                raise CaffeError(f"layer '{self.name}': loss_weight must be unspecified or "
                                 f"given once per top ({len(top)} tops, {len(weights)} weights)")
        self.loss_weights = weights + [0.0] * (len(top) - len(weights))
        for t, w in zip(top, self.loss_weights):
            if w:
                t.diff[...] = w

    def is_state_blob(self, index):
        return index in self.state_blobs

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    # --- helpers ---------------------------------------------------------------------------
    def allow_force_backward(self, bottom_index):
        return True

    def make_blob(self, shape):
        return Blob(shape, self.dtype)

    def blobs_from_param(self, shapes):
        """Caffe's Layer constructor + LayerSetUp checks: the blobs carried inside the
        LayerParameter become the layer's blobs and must have the expected shapes."""
        from ..io.blobs import blob_proto_to_array
        if len(self.param.blobs) != len(shapes):
            raise self.error(f"Incorrect number of weight blobs: expected {len(shapes)}, "
                             f"got {len(self.param.blobs)}")
        blobs = []
        for i, (bp, shape) in enumerate(zip(self.param.blobs, shapes)):
            data = blob_proto_to_array(bp, name=f"{self.name} blob {i}")
            if tuple(data.shape) != tuple(shape):
                what = "weight" if i == 0 else "bias"
                raise self.error(f"Incorrect {what} shape: expected shape {shape_string(shape)}; "
                                 f"instead, shape was {shape_string(data.shape)}")
            blob = self.make_blob(shape)
            blob.data[...] = data
            blobs.append(blob)
        return blobs

    def check_blob_counts(self, bottom, top):
        def check(kind, n, exact, lo, hi):
            if exact is not None and n != exact:
                raise CaffeError(f"layer '{self.name}' ({self.type}) takes {exact} {kind} "
                                 f"blob(s), got {n}")
            if lo is not None and n < lo:
                raise CaffeError(f"layer '{self.name}' ({self.type}) takes at least {lo} "
                                 f"{kind} blob(s), got {n}")
            if hi is not None and n > hi:
                raise CaffeError(f"layer '{self.name}' ({self.type}) takes at most {hi} "
                                 f"{kind} blob(s), got {n}")
        check("bottom", len(bottom), self.exact_num_bottom, self.min_bottom, self.max_bottom)
        check("top", len(top), self.exact_num_top, self.min_top, self.max_top)
        if self.equal_num_bottom_top and len(bottom) != len(top):
            raise CaffeError(f"layer '{self.name}' ({self.type}) needs as many tops as "
                             f"bottoms, got {len(bottom)} bottoms and {len(top)} tops")

    def canonical_axis(self, blob, axis):
        """blob.canonical_axis(axis), failing with a CaffeError that names this layer."""
        try:
            return blob.canonical_axis(axis)
        except IndexError as err:
            raise self.error(str(err)) from None

    def error(self, message):
        """A CaffeError naming this layer."""
        return CaffeError(f"layer '{self.name}' ({self.type}): {message}")


def shape_string(shape):
    """Caffe's Blob::shape_string: "2 3 4 (24)"."""
    return "".join(f"{d} " for d in shape) + f"({int(np.prod(shape, dtype=np.int64))})"
