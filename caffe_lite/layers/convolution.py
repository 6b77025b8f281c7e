"""Convolution (Caffe's ConvolutionLayer on BaseConvolutionLayer).

    y[n, m] = sum_c w[m, c] (*) x[n, group(m) * C/g + c] + b[m]       (cross-correlation)
    out = (in + 2 * pad - (dilation * (kernel - 1) + 1)) / stride + 1   (C division)

convolution_param: num_output (required), bias_term true, pad 0 / kernel_size (required) /
stride 1 / dilation 1 (repeated: once, or once per spatial axis), or pad_h/pad_w,
kernel_h/kernel_w, stride_h/stride_w (2-d only), group 1, weight_filler (constant 0),
bias_filler (constant 0), axis 1 (the channel axis: earlier axes are batch, later ones
spatial), engine and force_nd_im2col (accepted; one CPU path), conv_mode (SSL: the
engine, kernels/conv_engines.py; LOWERED_GEMM is Caffe's; a mode with a `train_note`
warns once when the net is built in TRAIN phase). One or two spatial axes (one
runs as 2-d with a unit height); more are refused with an error.

blobs: [weight (num_output, C/group, kh, kw), bias (num_output,)]. Several bottom/top pairs
share the weights, as in Caffe. Backward overwrites bottom diffs and accumulates the weight
and bias diffs.

The maths is in caffe_lite/kernels/conv.py. Seams for the forks: the engine, picked from a
table by conv_mode (kernels/conv_engines.py), runs forward and backward; a conv_mode without
an engine yet runs as LOWERED_GEMM (the fork-field check has warned about it).
`effective_weight()` / `effective_bias()` are what forward and backward use (DNS/INQ masked
or quantized layers override them).
"""
import inspect
import math

from .. import fillers
from ..common import TRAIN
from ..kernels.conv import ConvGeometry
from ..kernels.conv_engines import conv_engine
from ..log import LOG
from ..proto import caffe_pb2
from . import register
from .base import Layer, shape_string as _shape_string


@register("Convolution")
class ConvolutionLayer(Layer):
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    #: Deconvolution swaps the roles of input and output channels
    reverse_dimensions = False

    # --- set up (BaseConvolutionLayer::LayerSetUp) -----------------------------------------
    def layer_setup(self, bottom, top):
        p = self.param.convolution_param
        shape = bottom[0].shape
        self.channel_axis = self.canonical_axis(bottom[0], p.axis)
        self.num_spatial_axes = len(shape) - self.channel_axis - 1
        if self.num_spatial_axes not in (1, 2):
            raise self.error(f"{self.num_spatial_axes} spatial axes (bottom shape "
                             f"{tuple(shape)}, axis {p.axis}): only 1-d and 2-d convolution "
                             f"are supported")
        kernel = self._spatial("kernel_size", "kernel_h", "kernel_w", None, p)
        if any(k <= 0 for k in kernel):
            raise self.error("Filter dimensions must be nonzero.")
        stride = self._spatial("stride", "stride_h", "stride_w", 1, p)
        if any(s <= 0 for s in stride):
            raise self.error("Stride dimensions must be nonzero.")
        pad = self._spatial("pad", "pad_h", "pad_w", 0, p)
        dilation = self._spatial("dilation", None, None, 1, p)
        if any(d <= 0 for d in dilation):
            raise self.error("Dilation dimensions must be nonzero.")
        if self.num_spatial_axes == 1:
            # 1-d runs as 2-d over a unit height: the same sums, term for term
            kernel, stride, pad, dilation = ((1,) + kernel, (1,) + stride, (0,) + pad,
                                             (1,) + dilation)
        self.channels = shape[self.channel_axis]
        self.num_output = p.num_output
        if self.num_output <= 0:
            raise self.error("num_output must be > 0")
        self.group = p.group
        if self.group <= 0 or self.channels % self.group:
            raise self.error(f"channels ({self.channels}) must be a multiple of group "
                             f"({self.group})")
        if self.num_output % self.group:
            raise self.error("Number of output should be multiples of group.")
        self.geometry = ConvGeometry(kernel[0], kernel[1], pad[0], pad[1], stride[0],
                                     stride[1], dilation[0], dilation[1], self.group)
        if self.reverse_dimensions:
            conv_out, conv_in = self.channels, self.num_output
        else:
            conv_out, conv_in = self.num_output, self.channels
        self.bias_term = p.bias_term
        weight_shape = (conv_out, conv_in // self.group) + tuple(self.kernel_shape)
        shapes = [weight_shape] + ([(self.num_output,)] if self.bias_term else [])
        if len(self.param.blobs) and not self.blobs:
            self.blobs = self.blobs_from_param(shapes)
        elif not self.blobs:
            self.blobs = [self.make_blob(s) for s in shapes]
            fillers.fill(self.blobs[0], p.weight_filler)
            if self.bias_term:
                fillers.fill(self.blobs[1], p.bias_filler)
        elif [b.shape for b in self.blobs] != shapes:
            raise self.error(f"Incorrect weight blobs: expected shapes {shapes}, got "
                             f"{[b.shape for b in self.blobs]}")
        self.engine = self.make_engine()
        self._shapes = None

    def _spatial(self, name, name_h, name_w, default, p):
        """One value per spatial axis from the repeated field or its _h/_w forms."""
        n = self.num_spatial_axes
        if name_h and (p.HasField(name_h) or p.HasField(name_w)):
            if n != 2:
                raise self.error(f"{name_h} & {name_w} can only be used for 2D convolution.")
            if len(getattr(p, name)):
                raise self.error(f"Either {name} or {name_h}/w should be specified; "
                                 f"not both.")
            return (getattr(p, name_h), getattr(p, name_w))
        values = list(getattr(p, name))
        if not values and default is None:
            raise self.error(f"{name} (or {name_h}/{name_w}) is required")
        if len(values) not in (0, 1, n):
            raise self.error(f"{name} must be specified once, or once per spatial dimension "
                             f"({name} specified {len(values)} times; {n} spatial dims).")
        if not values:
            return (default,) * n
        return tuple(values) if len(values) == n else (values[0],) * n

    @property
    def kernel_shape(self):
        g = self.geometry
        return (g.kernel_w,) if self.num_spatial_axes == 1 else (g.kernel_h, g.kernel_w)

    def make_engine(self):
        """The engine for convolution_param.conv_mode (LOWERED_GEMM when it has none yet)."""
        mode = caffe_pb2.ConvolutionParameter.ConvMode.Name(
            self.param.convolution_param.conv_mode)
        engine = conv_engine(mode) or conv_engine("LOWERED_GEMM")
        if engine.train_note and self.phase == TRAIN:
            LOG.warning("layer '%s': conv_mode %s %s", self.name, mode, engine.train_note)
        return engine

    def effective_weight(self):
        """The weight forward and backward use (masked/quantized fork layers override)."""
        w = self.blobs[0].data
        return w if self.param_transform is None else self.param_transform(0, w)

    def effective_bias(self):
        """The bias forward uses, or None without one (fork layers override)."""
        if not self.bias_term:
            return None
        b = self.blobs[1].data
        return b if self.param_transform is None else self.param_transform(1, b)

    # --- shapes ---------------------------------------------------------------------------
    def output_spatial(self, spatial):
        return self.geometry.output_shape(*spatial)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self._shapes is not None and self._shapes[0] == shape and all(
                b.shape == shape for b in bottom) and all(
                t.shape == self._shapes[1] for t in top):
            return
        axis = self.channel_axis
        if len(shape) != axis + 1 + self.num_spatial_axes:
            raise self.error("bottom num_axes may not change.")
        if shape[axis] != self.channels:
            raise self.error(f"Input size incompatible with convolution kernel: bottom has "
                             f"{shape[axis]} channels, the layer was set up for "
                             f"{self.channels}")
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != shape:
                raise self.error(f"shape mismatch - bottom[0]: {_shape_string(shape)} vs. "
                                 f"bottom[{i}]: {_shape_string(b.shape)}")
        spatial = tuple(shape[axis + 1:])
        if self.num_spatial_axes == 1:
            spatial = (1,) + spatial
        out = self.output_spatial(spatial)
        if any(o < 0 for o in out):
            raise self.error(f"output size {out} is negative: the input {spatial} is smaller "
                             f"than the kernel extent")
        num = math.prod(shape[:axis])
        # 4-d views (num, channels, H, W) of bottoms and tops for the kernels
        self._in4 = (num, self.channels) + spatial
        self._out4 = (num, self.num_output) + out
        top_shape = tuple(shape[:axis]) + (self.num_output,) + (
            out[1:] if self.num_spatial_axes == 1 else out)
        for t in top:
            t.reshape(top_shape)
        self._shapes = (shape, top_shape)

    # --- forward / backward ---------------------------------------------------------------
    #: set by Net during a fused pass (net_fusion.py): a kernels.channel_epilogue
    #: ChannelEpilogue, the BatchNorm (Scale, ReLU) in place on the top, applied as written
    fused_epilogue = None

    @property
    def fuses_channel_epilogue(self):
        """Whether Net may fuse a BatchNorm in place on the top into this layer's forward:
        channels on axis 1, and an engine whose forward takes an epilogue (one registered
        without it keeps the BatchNorm a layer of its own)."""
        return (self.engine is not None and self.channel_axis == 1
                and "epilogue" in inspect.signature(self.engine.forward).parameters)

    def forward_cpu(self, bottom, top):
        w = self.effective_weight()
        bias = self.effective_bias()
        more = {} if self.fused_epilogue is None else {"epilogue": self.fused_epilogue}
        for b, t in zip(bottom, top):
            self.engine.forward(b.data.reshape(self._in4), w, bias, self.geometry,
                                t.data.reshape(self._out4), **more)

    def backward_cpu(self, top, propagate_down, bottom):
        w = self.effective_weight()
        dw = self.blobs[0].diff if self.param_propagate_down[0] else None
        db = (self.blobs[1].diff if self.bias_term and self.param_propagate_down[1]
              else None)
        for i, (b, t) in enumerate(zip(bottom, top)):
            dx = b.diff.reshape(self._in4) if propagate_down[i] else None
            self.engine.backward(b.data.reshape(self._in4), w, t.diff.reshape(self._out4),
                                 self.geometry, dx=dx, dw=dw, db=db)
