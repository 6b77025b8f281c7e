"""Silence: consumes bottoms so they are not net outputs (Caffe's SilenceLayer).

At least one bottom, no tops. Forward does nothing; backward zeroes the bottom diffs that
need a gradient (the silenced blobs do not contribute to the loss).
"""
from . import register
from .base import Layer


@register("Silence")
class SilenceLayer(Layer):
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff[...] = 0
