"""Concat: join the bottoms along one axis (Caffe's ConcatLayer).

  top = [bottom_0 | bottom_1 | ...] along `axis`; every other axis must agree.
  bottom_i.diff = the slab of top.diff that bottom_i filled.
With a single bottom the top aliases the bottom's data, as Caffe's ShareData does; the
diff is copied back in backward rather than aliased, same numbers.

concat_param:
  axis        int32, default 1 (negative counts from the end)
  concat_dim  uint32, default 1 (deprecated alias of axis; give one or the other)
"""
import numpy as np

from . import register
from .base import Layer


@register("Concat")
class ConcatLayer(Layer):
    min_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("Either axis or concat_dim should be specified; not both.")

    def reshape(self, bottom, top):
        p = self.param.concat_param
        shape0 = bottom[0].shape
        n = len(shape0)
        if p.HasField("concat_dim"):
            axis = p.concat_dim
            if axis >= n:
                raise self.error(f"concat_dim {axis} out of range for a {n}-axis bottom")
        else:
            axis = self.canonical_axis(bottom[0], p.axis)
        top_shape = list(shape0)
        for i, b in enumerate(bottom[1:], 1):
            if b.num_axes != n:
                raise self.error(f"All inputs must have the same #axes: bottom[{i}] "
                                 f"{b.shape} vs bottom[0] {shape0}")
            for j in range(n):
                if j != axis and b.shape[j] != shape0[j]:
                    raise self.error("All inputs must have the same shape, except at "
                                     f"concat_axis {axis}: bottom[{i}] {b.shape} vs "
                                     f"bottom[0] {shape0}")
            top_shape[axis] += b.shape[axis]
        self.axis = axis
        top[0].reshape(top_shape)
        if len(bottom) == 1:
            top[0].share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            return
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        top_diff = top[0].diff
        head = (slice(None),) * self.axis
        offset = 0
        for i, b in enumerate(bottom):
            size = b.shape[self.axis]
            if propagate_down[i]:
                np.copyto(b.diff, top_diff[head + (slice(offset, offset + size),)])
            offset += size
