"""Convolution engines, chosen by SSL's `convolution_param.conv_mode`.

An engine owns a convolution's forward and backward over 4-d arrays (N, C, H, W):

    engine.forward(x, w, bias, geo, y, epilogue=None)
                                                    y = conv(x, w) + bias  (bias may be None),
                                                    then a ChannelEpilogue (None: none)
    engine.backward(x, w, dy, geo, dx, dw, db)      dx overwritten; dw, db accumulated;
                                                    None for the ones not wanted

`w` is the layer's effective weight (masked or quantized by a fork layer). The table maps a
conv_mode name (ConvolutionParameter.ConvMode) to an engine class; a layer makes one
instance, so an engine may keep per-layer state (a compressed copy of the weight). An
engine may replace only the product after lowering (give LoweredGemm's subclass another
`product`, as SSL's CSR and CCNMM modes do) or the whole pass (direct sparse convolution).
SSL trains with LOWERED_GEMM only and uses the sparse modes for deployment, so an engine
that has no sparse backward inherits the dense one.

The epilogue (kernels/channel_epilogue.py: a BatchNorm with stored statistics, a Scale and
a ReLU in place on the top, which Net fuses into the convolution) is applied where a path
writes its values, or in a pass of its own after a path that cannot.

`train_note`: a line the Convolution layer logs as a warning when a net is built in TRAIN
phase with this mode (None: nothing to say). `invalidate()`: drop any cached copy of the weight.

SSL's modes (LOWERED_CSRMM, LOWERED_CCNMM, DIRECT_SCONV, DIRECT_DCONV) are in
kernels/sparse_conv_engines.py, registered when this module is imported.
"""
from . import blocked_conv, nhwc_weight_grad
from .blocked_weight_grad import blocked_weight_grad
from .conv import (DENSE, _check, conv2d_backward, conv2d_forward, flipped_geometry,
                   flipped_weight4)
from .depthwise_conv import depthwise_backward, depthwise_forward, is_depthwise
from .direct_conv import DirectConv

CONV_ENGINES = {}


def register_conv_engine(mode):
    def wrap(cls):
        CONV_ENGINES[mode] = cls
        return cls
    return wrap


def conv_engine(mode):
    """A new engine for `mode`, or None when caffe-lite has no engine for it yet."""
    cls = CONV_ENGINES.get(mode)
    return cls() if cls is not None else None


#: a strided convolution with at most this many input channels per group runs its forward
#: on the direct loops (kernels/direct_conv.py), with at most DIRECT_MAX_OUTPUTS outputs per
#: group or a single image: lowering is most of its time there, and the GEMM has few rows.
#: Two threads, float32, direct against lowered: mobilenet-0.5's conv1 (3 -> 16, 3x3,
#: stride 2, 224x224) 0.25 / 0.75 ms at batch 1, 0.83 / 1.64 at 4, 1.71 / 2.28 at 8, 3.4 /
#: 4.6 at 16; CaffeNet's conv1 (3 -> 96, 11x11, stride 4) 2.3 / 2.9 ms at batch 1, but 8.9
#: / 6.2 at batch 4
DIRECT_MAX_INPUTS, DIRECT_MAX_OUTPUTS = 4, 32


def direct_pays(x, geo, outputs):
    """Whether y = conv(x, w) with `outputs` channels runs forward on the direct loops."""
    return ((geo.stride_h > 1 or geo.stride_w > 1) and x.size > 0
            and x.shape[1] // geo.group <= DIRECT_MAX_INPUTS
            and (outputs // geo.group <= DIRECT_MAX_OUTPUTS or x.shape[0] == 1))


@register_conv_engine("LOWERED_GEMM")
class LoweredGemmEngine:
    """Caffe's own convolution: im2col, then one dense GEMM per group (kernels/conv.py).
    Layers that lowering serves badly compute the same sums another way, the first that
    applies in this order:
    - a depthwise convolution (one input channel per group): direct depthwise loops
      (kernels/depthwise_conv.py);
    - a convolution where tiles pay (blocked_conv.applies): tiles without lowering
      (kernels/blocked_conv.py; a strided one on its stride's phases), for the forward and
      for the data gradient where that is itself a stride-1 convolution of dy; and its
      weight and bias gradients: at stride 1 from channels-last copies for layers with
      32+ inputs and 64-192 outputs per group (kernels/nhwc_weight_grad.py), else up to
      GRAD_MAX_OUTPUTS outputs per group (kernels/blocked_weight_grad.py; a strided layer
      on its stride's phases where its output planes are large enough,
      blocked_conv.weight_grad_applies);
    - a strided convolution of a few input channels (direct_pays): the forward on the
      direct loops of DIRECT_DCONV (kernels/direct_conv.py), which keep the weight's
      listing per layer and check it at each call."""
    product = DENSE
    train_note = None

    _direct = None

    def invalidate(self):
        """Drop the direct loops' listing of the weight (the rest reads it at every pass)."""
        if self._direct is not None:
            self._direct.invalidate()

    def forward(self, x, w, bias, geo, y, epilogue=None):
        if self.product is DENSE and is_depthwise(x, geo):
            depthwise_forward(x, w, bias, geo, y, epilogue)
        elif self.product is DENSE and blocked_conv.applies(x, geo, y.shape[1]):
            blocked_conv.blocked_conv_forward(x, w, bias, geo, y, epilogue=epilogue)
        elif self.product is DENSE and y.size and direct_pays(x, geo, y.shape[1]):
            _check(x, w, geo, y)
            if self._direct is None:
                self._direct = DirectConv(keep_zeros=True)
            self._direct.forward(x, w, bias, geo, y)
            if epilogue is not None:
                epilogue.apply(y)
        else:
            conv2d_forward(x, w, bias, geo, y, product=self.product, epilogue=epilogue)

    def backward(self, x, w, dy, geo, dx=None, dw=None, db=None):
        if is_depthwise(x, geo):
            depthwise_backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
            return
        if x.size and dy.size:
            if dx is not None:
                geo_t = flipped_geometry(geo, x.shape[2:], dy.shape[2:])
                if geo_t is not None and blocked_conv.applies(dy, geo_t, x.shape[1]):
                    blocked_conv.blocked_conv_forward(dy, flipped_weight4(w, geo), None, geo_t,
                                                      dx)
                    dx = None
            if dw is not None and nhwc_weight_grad.applies(x, geo, dy.shape[1]):
                nhwc_weight_grad.nhwc_weight_grad(x, dy, geo, dw, db)
                dw = db = None
            elif dw is not None and blocked_conv.weight_grad_applies(x, geo, dy.shape[1]):
                blocked_weight_grad(x, dy, geo, dw, db)
                dw = db = None
        if dx is not None or dw is not None or db is not None:
            conv2d_backward(x, w, dy, geo, dx=dx, dw=dw, db=db)


from . import sparse_conv_engines  # noqa: F401  (registers SSL's sparse modes)
