"""Split: hands one blob to several consumers (Caffe's SplitLayer, inserted by the Net).

  top_i = bottom          (each top shares the bottom's data memory)
  d bottom = sum_i d top_i
One bottom, at least one top, no in-place use. The Net inserts it for every blob read by
more than one layer, naming tops `<blob>_<layer>_<index>_split_<k>` as Caffe does.
"""
import numpy as np

from . import register
from .base import Layer


@register("Split")
class SplitLayer(Layer):
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            if t is bottom[0]:
                raise self.error("Layer does not allow in-place computation")
            t.reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        for t in top:
            t.share_data(bottom[0])

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        out = bottom[0].diff
        if len(top) == 1:
            np.copyto(out, top[0].diff.reshape(out.shape))
            return
        np.add(top[0].diff.reshape(out.shape), top[1].diff.reshape(out.shape), out=out)
        for t in top[2:]:
            out += t.diff.reshape(out.shape)
