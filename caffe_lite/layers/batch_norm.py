"""BatchNorm: per-channel batch normalisation, BVLC's layer and NVCaffe's two forms.

batch_norm_param: use_global_stats (unset: true in TEST), moving_average_fraction (.999),
eps (1e-5); NVCaffe/caffe-jacinto add scale_bias (false), scale_filler, bias_filler.
Channels are axis 1 (1 for a 1-axis input); statistics run over every other axis.

BVLC (3 blobs [mean, variance, moving-average factor s], all state blobs; a `param` with a
nonzero lr_mult on them is refused, as Caffe does):
  y = (x - mu) / sqrt(var + eps)
  TRAIN-style (use_global_stats false): mu, var = batch mean and biased variance, and
    s = s * maf + 1;  blob0 = maf * blob0 + mu;  blob1 = maf * blob1 + m/(m-1) var
    (m = count / channels, correction 1 when m == 1)
  global stats: mu = blob0 / s, var = blob1 / s (0 when s == 0).

NVCaffe, as read from the fork sources (NVIDIA/caffe and tidsp/caffe-jacinto
src/caffe/layers/batch_norm_layer.{cpp,cu}); both apply a learnable y = x_hat * scale + bias:
  * 0.16 / 0.17 (`scale_bias: true`): 5 blobs [mean, variance, variance correction (1 element,
    set to 1 and never read), scale (filler or 1), bias (filler or 0)]. (Without scale_bias
    NVCaffe keeps 3 blobs [mean, variance, 1]; such a layer cannot be told from a BVLC one
    and runs as BVLC.) The phase decides (TEST: stored statistics; TRAIN: batch statistics),
    use_global_stats is ignored; eps is raised to at least 1e-5. Running statistics hold the
    plain (biased) values: the first two TRAIN passes copy the batch mean/variance, later ones
    do blob = maf * blob + (1 - maf) * batch. Blobs 0-2 are state; lr_mult/decay_mult
    are forced to 1 for scale and bias.
  * 0.15 (scale_filler/bias_filler without scale_bias, the `param` entries usually 4): 5 blobs
    [scale, bias, mean, variance, 1-element counter (never written)]; scale and bias come
    from their fillers (an absent filler is constant 0). use_global_stats as in BVLC. The
    running update is the 0.16 one, but the copy happens only on the first TRAIN pass, and
    after 200 TRAIN passes the batch variance is clipped to
    [var_g / 4, 4 * (var_g + mean(|var_g|))] (var_g = the stored variance).
  The 0.15 form is told from the 0.16 one by the stored blob shapes when the layer carries
  blobs, else by its first `param` having lr_mult 0 (statistics first) or not.
  Where the NVCaffe CPU and GPU code disagree (0.17 CPU adds eps to the variance before the
  running update) the GPU code, which the forks trained with, is followed. NVCaffe's backward
  always uses the batch-statistics formula, also with stored statistics; so does this one.
  NVCaffe overwrites the scale/bias diffs; here they accumulate, as every parameter diff does.
"""
import numpy as np

from . import register
from .base import Layer
from ..common import TEST
from ..fillers import fill
from ..kernels import batch_norm as K
from ..kernels.channel_epilogue import ChannelEpilogue

# Blob order of each form; the learnable blobs are named "scale" and "bias".
LAYOUTS = {
    "bvlc": ("mean", "variance", "moving_average_factor"),
    "nvcaffe-0.16": ("mean", "variance", "variance_correction", "scale", "bias"),
    "nvcaffe-0.15": ("scale", "bias", "mean", "variance", "counter"),
}
NV015_CLIP_START = 200
NV015_CLIP_CONST = 4.0


def _proto_count(bp):
    if len(bp.shape.dim):
        return int(np.prod(list(bp.shape.dim)))
    return bp.num * bp.channels * bp.height * bp.width


def detect_layout(param):
    """Which BatchNorm form a LayerParameter asks for (a key of LAYOUTS)."""
    bn = param.batch_norm_param
    scale_bias = bn.scale_bias
    fillers = bn.HasField("scale_filler") or bn.HasField("bias_filler")
    if scale_bias:
        return "nvcaffe-0.16"
    if not fillers:
        return "bvlc"
    if len(param.blobs) == 5:
        counts = [_proto_count(b) for b in param.blobs]
        if counts[4] == 1 and counts[2] != 1:
            return "nvcaffe-0.15"
        if counts[2] == 1 and counts[4] != 1:
            return "nvcaffe-0.16"
    if len(param.param) and param.param[0].lr_mult == 0:
        return "nvcaffe-0.16"
    return "nvcaffe-0.15"


@register("BatchNorm")
class BatchNormLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1
    fuses_relu = True
    copies_top = True
    #: set by Net during a fused pass: (the Scale layer that reads this layer's top, that
    #: layer's top blob); this layer computes the Scale's output too (BVLC layout, top kept)
    fused_scale = None
    _x_norm_is_top = False
    _x_norm = None

    def layer_setup(self, bottom, top):
        bn = self.param.batch_norm_param
        self.layout = detect_layout(self.param)
        self.names = LAYOUTS[self.layout]
        self.maf = bn.moving_average_fraction
        self.eps = bn.eps
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if self.layout == "nvcaffe-0.16":
            # NVCaffe 0.16/0.17: the phase alone picks the statistics; eps >= 1e-5
            self.use_global_stats = self.phase == TEST
            self.eps = max(self.eps, float(np.float32(1e-5)))
        else:
            self.use_global_stats = (bn.use_global_stats if bn.HasField("use_global_stats")
                                     else self.phase == TEST)
        self.iter = 0
        c = self.channels
        shapes = {"moving_average_factor": (1,), "variance_correction": (1,), "counter": (1,)}
        self.blobs = [self.make_blob(shapes.get(name, (c,))) for name in self.names]
        b = dict(zip(self.names, self.blobs))
        if "variance_correction" in b:
            b["variance_correction"].data[...] = 1
        if "scale" in b:
            if self.layout == "nvcaffe-0.15":
                # GetFiller on an absent filler gives constant 0, as in the fork
                fill(b["scale"], bn.scale_filler)
                fill(b["bias"], bn.bias_filler)
            else:
                if bn.HasField("scale_filler"):
                    fill(b["scale"], bn.scale_filler)
                else:
                    b["scale"].data[...] = 1
                if bn.HasField("bias_filler"):
                    fill(b["bias"], bn.bias_filler)
        self.state_blobs = frozenset(i for i, name in enumerate(self.names)
                                     if name not in ("scale", "bias"))
        self._check_param_specs()

    def _check_param_specs(self):
        """The statistics are state blobs (never updated); the specs keep each fork's rules:
        BVLC refuses a learning rate on them, NVCaffe 0.16/0.17 forces scale and bias to
        lr_mult and decay_mult 1."""
        specs = self.param.param
        if self.layout == "bvlc":
            if any(spec.lr_mult != 0 for spec in specs[:3]):
                raise self.error("Cannot configure batch normalization statistics as layer "
                                 "parameters.")
        elif self.layout == "nvcaffe-0.16":
            while len(specs) < len(self.names):
                specs.add()
            for i, name in enumerate(self.names):
                if name in ("scale", "bias"):
                    specs[i].lr_mult = 1.0
                    specs[i].decay_mult = 1.0

    def reshape(self, bottom, top):
        if bottom[0].num_axes > 1 and bottom[0].shape[1] != self.channels:
            raise self.error(f"bottom has {bottom[0].shape[1]} channels, the layer was set "
                             f"up for {self.channels}")
        top[0].reshape(bottom[0].shape)

    @property
    def fuses_scale(self):
        """Whether a Scale layer reading the top can be computed in this layer's pass."""
        return self.layout == "bvlc"

    def _view(self, arr):
        return arr.reshape(arr.shape[0], self.channels, -1)

    def _x_norm_buffer(self, shape):
        """x_norm, kept for backward in a buffer reused across calls (the top may be
        overwritten by a later in-place layer, so it cannot serve)."""
        buf = getattr(self, "_x_norm", None)
        if buf is None or buf.shape != shape:
            buf = self._x_norm = np.empty(shape, self.dtype)
        return buf

    def forward_cpu(self, bottom, top):
        x = self._view(bottom[0].data)
        y = self._view(top[0].data)
        c = self.channels
        mean = np.empty(c, self.dtype)
        var = np.empty(c, self.dtype)
        b = dict(zip(self.names, (blob.data for blob in self.blobs)))
        if self.layout == "bvlc":
            if self.use_global_stats:
                # the backward of stored statistics is dy / std: no x_norm to keep
                K.bvlc_global_stats(b["mean"], b["variance"], b["moving_average_factor"],
                                    mean, var)
                self._std = K.bvlc_std(var, self.eps)
                if self.fused_scale is not None:
                    self._normalize_and_scale(x, mean, y)
                else:
                    K.bvlc_normalize_global(x, mean, self._std, y, self.fused_relu)
                return
            K.bvlc_batch_stats(x, mean, var)
            self._std = K.bvlc_running_and_std(
                [b["mean"], b["variance"], b["moving_average_factor"]], mean, var, self.maf,
                x.size // c, self.eps)
            # x_norm is the top itself where nothing writes the top before the backward
            self._x_norm_is_top = self.top_kept and top[0] is not bottom[0]
            if self.fused_scale is not None:     # Net fuses a Scale only on a kept top
                self._normalize_and_scale(x, mean, y)
                self._x_norm, self._x_norm_is_top = None, True
            elif self._x_norm_is_top or not self.backward_follows:
                K.bvlc_normalize_global(x, mean, self._std, y, self.fused_relu)
                self._x_norm = None
            else:
                K.bvlc_normalize(x, mean, self._std, y, self._x_norm_buffer(x.shape),
                                 self.fused_relu)
            return
        # a forward that no backward follows keeps no x_norm (Layer.backward_follows)
        x_norm = self._x_norm_buffer(x.shape) if self.backward_follows else None
        self._x_norm = x_norm
        dt = self.dtype.type
        if self.use_global_stats:
            np.copyto(mean, b["mean"])
            np.copyto(var, b["variance"])
        else:
            K.nv_batch_stats(x, mean, var)
            if self.layout == "nvcaffe-0.15":
                if self.phase != TEST and self.iter <= NV015_CLIP_START:
                    self.iter += 1
                if self.iter > NV015_CLIP_START:
                    g = b["variance"]
                    upper = dt(np.abs(g).sum(dtype=self.dtype) / dt(c)) + g
                    np.minimum(dt(NV015_CLIP_CONST) * upper, var, out=var)
                    np.maximum(dt(1.0 / NV015_CLIP_CONST) * g, var, out=var)
                ema = self.iter > 1
            else:
                ema = self.iter > 1
                self.iter += 1
            if ema:
                keep, take = dt(self.maf), dt(1.0 - self.maf)
                for blob, stat in ((b["mean"], mean), (b["variance"], var)):
                    blob *= keep
                    blob += take * stat
            else:
                np.copyto(b["mean"], mean)
                np.copyto(b["variance"], var)
        self._inv_std = K.nv_inv_std(var, self.eps)
        if "scale" in b:
            K.nv_normalize(x, mean, self._inv_std, b["scale"], b["bias"], y, x_norm,
                           self.fused_relu)
        else:
            empty = np.empty(0, self.dtype)
            K.nv_normalize(x, mean, self._inv_std, empty, empty, y, x_norm, self.fused_relu)

    def stored_stats_epilogue(self, scale_layer=None, relu_slope=None):
        """This layer's forward with stored statistics (use_global_stats), then scale_layer's
        (a Scale in place on the top, BVLC layout; None: none) and a ReLU's (relu_slope; None:
        none), as a ChannelEpilogue that the convolution writing the bottom applies to its
        values (Net's fusion, net_fusion.py): the statistics as forward_cpu takes them."""
        c = self.channels
        b = dict(zip(self.names, (blob.data for blob in self.blobs)))
        mean = np.empty(c, self.dtype)
        var = np.empty(c, self.dtype)
        if self.layout == "bvlc":
            K.bvlc_global_stats(b["mean"], b["variance"], b["moving_average_factor"], mean,
                                var)
            self._std = K.bvlc_std(var, self.eps)
            scale, bias = (None, None) if scale_layer is None else scale_layer.channel_scale()
            return ChannelEpilogue.make(mean, self._std, True, scale, bias, relu_slope)
        np.copyto(mean, b["mean"])
        np.copyto(var, b["variance"])
        self._inv_std = K.nv_inv_std(var, self.eps)
        return ChannelEpilogue.make(mean, self._inv_std, False, b.get("scale"), b.get("bias"),
                                    relu_slope)

    def _normalize_and_scale(self, x, mean, y):
        """y = (x - mean) / std and the fused Scale's top (then the fused ReLU's) in one
        pass."""
        scale_layer, scale_top = self.fused_scale
        scale, bias = scale_layer.channel_scale()
        relu_top = self.fused_relu_top
        K.bvlc_normalize_scale(x, mean, self._std, y, scale, bias, self._view(scale_top.data),
                               self.fused_relu,
                               None if relu_top is None else self._view(relu_top.data))

    def backward_cpu(self, top, propagate_down, bottom):
        dy = self._view(top[0].diff)
        # Caffe's BatchNorm (BVLC and NVCaffe) ignores propagate_down and always writes the
        # bottom diff; the golden nets rely on it (an Input blob's diff is filled).
        dx = self._view(bottom[0].diff)
        if self._x_norm is None and not (self._x_norm_is_top or
                                         (self.use_global_stats and self.layout == "bvlc")):
            raise self.error("backward after a forward that kept no x_norm (the net runs "
                             "forward only)")
        if self.layout == "bvlc":
            x_norm = self._view(top[0].data) if self._x_norm_is_top else self._x_norm
            K.bvlc_backward(None if self.use_global_stats else x_norm, dy, self._std,
                            self.use_global_stats, dx)
            return
        b = dict(zip(self.names, self.blobs))
        scale = b["scale"].data if "scale" in b else np.empty(0, self.dtype)
        sums = K.nv_backward(self._x_norm, dy, scale, self._inv_std, dx)
        if "scale" in b:
            if self.param_propagate_down[self.names.index("scale")]:
                b["scale"].diff[...] += sums[0]
            if self.param_propagate_down[self.names.index("bias")]:
                b["bias"].diff[...] += sums[1]
