"""Reshape: give the bottom's data a new shape without copying (Caffe's ReshapeLayer).

  top shape = bottom.shape[:axis] + shape + bottom.shape[axis+num_axes:]
  where a 0 in `shape` copies the bottom's dim at that position and one -1 is inferred
  from the count.
The top aliases the bottom's data (from reshape on, as in Caffe). Caffe also aliases the
diff at reshape time; here the bottom aliases the top's diff in backward, as Flatten does,
so that zeroing a bottom's diff before backward cannot clear the top's incoming gradient.
Same memory after backward, same numbers.

reshape_param:
  shape     BlobShape: dims, 0 = copy, -1 = infer (at most one)
  axis      int32, default 0 (first replaced axis; negative counts from the end, -1 = append)
  num_axes  int32, default -1 (replaced axes; -1 = all from axis on)
"""
import math

import numpy as np

from . import register
from .base import Layer


@register("Reshape")
class ReshapeLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Reshape Layer does not allow in-place computation.")
        dims = list(self.param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.error("new shape contains multiple -1 dims; at most a single (1) "
                             "value of -1 may be specified")
        bad = [d for d in dims if d < -1]
        if bad:
            raise self.error(f"reshape_param.shape dims must be >= -1, got {bad[0]}")
        self.inferred_axis = inferred[0] if inferred else -1
        self.dims = dims
        self.constant_count = 1
        for d in dims:
            if d > 0:
                self.constant_count *= d

    def reshape(self, bottom, top):
        p = self.param.reshape_param
        shape = bottom[0].shape
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.error(f"axis {p.axis} out of range for a {n}-axis bottom")
        if p.num_axes < -1:
            raise self.error("num_axes must be >= 0, or -1 for all")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.error(f"end_axis = axis + num_axes = {end} is out of range for a "
                             f"{n}-axis bottom")
        top_shape = list(shape[:start]) + list(self.dims) + list(shape[end:])
        for i in self.copy_axes:
            if start + i >= n:
                raise self.error("new shape contains a 0, but there was no corresponding "
                                 "bottom axis to copy")
            top_shape[start + i] = shape[start + i]
        count = bottom[0].count
        if self.inferred_axis >= 0:
            explicit = (self.constant_count * bottom[0].count_range(0, start)
                        * bottom[0].count_range(end))
            for i in self.copy_axes:
                explicit *= top_shape[start + i]
            if explicit == 0 or count % explicit:
                raise self.error(f"bottom count ({count}) must be divisible by the product "
                                 f"of the specified dimensions ({explicit})")
            top_shape[start + self.inferred_axis] = count // explicit
        if math.prod(top_shape) != count:
            raise self.error(f"output count must match input count: top {tuple(top_shape)} "
                             f"vs bottom {shape}")
        top[0].reshape(top_shape)
        top[0].share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        # the bottom's arrays may have been replaced since reshape (set_arrays)
        top[0].share_data(bottom[0])

    def backward_cpu(self, top, propagate_down, bottom):
        bottom[0].share_diff(top[0])
