"""LRN: local response normalisation (Caffe's LRNLayer).

lrn_param: local_size (5, odd), alpha (1), beta (0.75), k (1),
norm_region (ACROSS_CHANNELS | WITHIN_CHANNEL, default ACROSS_CHANNELS).
  ACROSS_CHANNELS: y = x * (k + alpha/n * sum_{n neighbouring channels} x^2)^-beta
  WITHIN_CHANNEL:  y = x * (1 + alpha * mean_{n x n window, zero-padded} x^2)^-beta
                   (Caffe builds it from Power, AVE Pooling and Eltwise layers and ignores k)
Input 4-d (N, C, H, W); one bottom, one top.
"""
import numpy as np

from . import register
from .base import Layer
from ..kernels import lrn as K

ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


@register("LRN")
class LRNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = p.local_size
        if self.size % 2 != 1:
            raise self.error(f"LRN only supports odd values for local_size, got {self.size}")
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.region = p.norm_region
        if self.region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
            raise self.error(f"Unknown normalization region {self.region}.")

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("Input must have 4 axes, corresponding to (num, channels, "
                             f"height, width); got shape {bottom[0].shape}")
        if top[0] is bottom[0]:
            raise self.error("LRN cannot run in place")
        top[0].reshape(bottom[0].shape)
        # scale (across) or the pooled squares and the power term (within)
        if getattr(self, "_buf", None) is None or self._buf[0].shape != bottom[0].shape:
            self._buf = (np.empty(bottom[0].shape, self.dtype),
                         np.empty(bottom[0].shape, self.dtype))

    def forward_cpu(self, bottom, top):
        dt = self.dtype.type
        x, y = bottom[0].data, top[0].data
        if self.region == ACROSS_CHANNELS:
            K.lrn_across_forward(x, self.size, dt(self.alpha) / dt(self.size), dt(-self.beta),
                                 dt(self.k), self._buf[0], y)
        else:
            K.lrn_within_forward(x, self.size, self.alpha, -self.beta, self._buf[0],
                                 self._buf[1], y)

    def backward_cpu(self, top, propagate_down, bottom):
        dt = self.dtype.type
        x, dx, dy = bottom[0].data, bottom[0].diff, top[0].diff
        if self.region == ACROSS_CHANNELS:
            # Caffe's CrossChannelBackward_cpu ignores propagate_down: it always writes dx
            # Caffe computes 2 * alpha * beta / size in double, then stores it as Dtype
            cache_ratio = dt(2.0 * self.alpha * self.beta / self.size)
            K.lrn_across_backward(x, top[0].data, self._buf[0], dy, self.size, dt(-self.beta),
                                  cache_ratio, dx)
        elif propagate_down[0]:
            K.lrn_within_backward(x, self.size, self.alpha, -self.beta, self._buf[0],
                                  self._buf[1], dy, dx)
