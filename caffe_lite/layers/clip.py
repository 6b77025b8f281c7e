"""Clip: clamp to [min, max] (Caffe's ClipLayer).

  top = max(min, min(bottom, max))
  bottom.diff = top.diff where min <= bottom <= max, else 0
In place, backward sees the clamped data (always inside), as Caffe's does.
NaN maps to `min`, as the std::max / std::min pair does.

clip_param:
  min  float, required
  max  float, required
"""
import numpy as np

from . import register
from .base import Layer


@register("Clip")
class ClipLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max")
        self.lo = self.dtype.type(p.min)
        self.hi = self.dtype.type(p.max)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        # std::min(x, hi) keeps a NaN x (np.minimum too); std::max(lo, NaN) is lo, which is
        # np.fmax's NaN rule
        y = top[0].data
        np.minimum(bottom[0].data, self.hi, out=y)
        np.fmax(y, self.lo, out=y)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            inside = (x >= self.lo) & (x <= self.hi)
            np.multiply(top[0].diff, inside, out=bottom[0].diff)
