"""MVN: mean-variance normalisation (Caffe's MVNLayer).

Over each (n, c) plane, or each n when across_channels:
  top = (x - mean(x)) / (sqrt(mean((x - mean(x))^2)) + eps)   normalize_variance
  top = x - mean(x)                                            otherwise
Caffe uses the legacy num()/channels() accessors: at most 4 axes, missing axes count as 1.

mvn_param:
  normalize_variance  bool, default true
  across_channels     bool, default false
  eps                 float, default 1e-9 (added to the standard deviation)
"""
import numpy as np

from ..kernels import mvn as K
from . import register
from .base import Layer


@register("MVN")
class MVNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = self.dtype.type(p.eps)
        self.ones = None
        self.std = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 4:
            raise self.error(f"Cannot use legacy accessors on Blobs with > 4 axes "
                             f"(bottom {shape})")
        legacy = tuple(shape) + (1,) * (4 - len(shape))
        num = legacy[0] if self.across_channels else legacy[0] * legacy[1]
        self.num = num
        self.dim = bottom[0].count // num if num else 0
        top[0].reshape(shape)
        if self.ones is None or self.ones.size != self.dim:
            self.ones = np.ones(self.dim, self.dtype)
        if self.std is None or self.std.size != num:
            self.std = np.zeros(num, self.dtype)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        y = top[0].data.reshape(self.num, self.dim)
        K.mvn_forward(x, self.ones, self.normalize_variance, self.eps, y, self.std)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(self.num, self.dim)
        dy = top[0].diff.reshape(self.num, self.dim)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        K.mvn_backward(y, dy, self.ones, self.normalize_variance, self.std, dx)
