"""Slice: cut the bottom along one axis into the tops (Caffe's SliceLayer).

  top_k = bottom[..., p_{k-1}:p_k, ...] along `axis`, with p_0 = 0 and p_K = the axis size;
  without slice_point the axis is split evenly among the tops.
  bottom.diff = [top_0.diff | top_1.diff | ...].
With a single top the top aliases the bottom's data (Caffe's ShareData); its diff is copied
back in backward.

slice_param:
  axis         int32, default 1 (negative counts from the end)
  slice_dim    uint32, default 1 (deprecated alias of axis; give one or the other)
  slice_point  repeated uint32: one fewer than the tops, strictly increasing
"""
import numpy as np

from . import register
from .base import Layer


@register("Slice")
class SliceLayer(Layer):
    exact_num_bottom = 1
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.error("Either axis or slice_dim should be specified; not both.")
        self.slice_point = list(p.slice_point)

    def reshape(self, bottom, top):
        p = self.param.slice_param
        shape = bottom[0].shape
        if p.HasField("slice_dim"):
            axis = p.slice_dim
            if axis >= len(shape):
                raise self.error(f"slice_dim {axis} out of range for a "
                                 f"{len(shape)}-axis bottom")
        else:
            axis = self.canonical_axis(bottom[0], p.axis)
        dim = shape[axis]
        if self.slice_point:
            if len(self.slice_point) != len(top) - 1:
                raise self.error(f"{len(self.slice_point)} slice_point(s) for {len(top)} "
                                 "tops; give one fewer than the tops")
            if len(top) > dim:
                raise self.error(f"{len(top)} tops cannot slice an axis of size {dim}")
            points = [0] + self.slice_point + [dim]
            for a, b in zip(points, points[1:]):
                if b <= a:
                    raise self.error(f"slice_point must increase and stay below the axis "
                                     f"size {dim}: got {self.slice_point}")
            sizes = [b - a for a, b in zip(points, points[1:])]
        else:
            if dim % len(top):
                raise self.error(f"Number of top blobs ({len(top)}) should evenly divide "
                                 f"input slice axis ({dim})")
            sizes = [dim // len(top)] * len(top)
        self.axis = axis
        self.sizes = sizes
        for t, size in zip(top, sizes):
            top_shape = list(shape)
            top_shape[axis] = size
            t.reshape(top_shape)
        if len(top) == 1:
            top[0].share_data(bottom[0])

    def _slabs(self, array):
        head = (slice(None),) * self.axis
        offset = 0
        for size in self.sizes:
            yield array[head + (slice(offset, offset + size),)]
            offset += size

    def forward_cpu(self, bottom, top):
        if len(top) == 1:
            top[0].share_data(bottom[0])
            return
        for t, slab in zip(top, self._slabs(bottom[0].data)):
            np.copyto(t.data, slab)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        for t, slab in zip(top, self._slabs(bottom[0].diff)):
            np.copyto(slab, t.diff)
