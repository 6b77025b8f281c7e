"""ArgMax: indices (and optionally values) of the top_k largest entries (Caffe's ArgMaxLayer).

argmax_param: out_max_val (false), top_k (1), axis (unset).
  axis set: along that axis; top shape = bottom shape with that axis = top_k; the top holds
    the indices, or the values when out_max_val.
  axis unset: over the flattened count(1) entries of each item; top (N, 1, top_k) of
    indices, or (N, 2, top_k) with [:, 0] the indices and [:, 1] the values when out_max_val
    (at least 3 axes, as Caffe).
Order: by value, largest first; equal values put the larger index first (std::greater on
(value, index) pairs). No gradient.
"""
import numpy as np

from . import register
from .base import Layer


@register("ArgMax")
class ArgMaxLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = p.top_k
        self.has_axis = p.HasField("axis")
        if self.top_k < 1:
            raise self.error("top_k must not be less than 1.")
        if self.has_axis:
            self.axis = self.canonical_axis(bottom[0], p.axis)
            if bottom[0].shape[self.axis] < self.top_k:
                raise self.error("top_k must be less than or equal to the dimension of the "
                                 "axis.")
        elif bottom[0].count_range(1) < self.top_k:
            raise self.error("top_k must be less than or equal to the number of classes.")

    def reshape(self, bottom, top):
        if self.has_axis:
            shape = list(bottom[0].shape)
            shape[self.axis] = self.top_k
            self.dims = (bottom[0].count_range(0, self.axis), bottom[0].shape[self.axis],
                         bottom[0].count_range(self.axis + 1))
        else:
            shape = [1] * max(bottom[0].num_axes, 3)
            shape[0] = bottom[0].shape[0]
            shape[2] = self.top_k
            if self.out_max_val:
                shape[1] = 2
            self.dims = (bottom[0].shape[0], bottom[0].count_range(1), 1)
        top[0].reshape(shape)

    def forward_cpu(self, bottom, top):
        outer, dim, inner = self.dims
        x = bottom[0].data.reshape(self.dims)
        # reversed, a stable descending sort puts the larger index first among equals
        rev = x[:, ::-1, :]
        order = np.argsort(-rev, axis=1, kind="stable")[:, :self.top_k, :]
        values = np.take_along_axis(rev, order, axis=1)
        index = (dim - 1 - order).astype(self.dtype)
        y = top[0].data
        if self.has_axis:
            y.reshape(outer, self.top_k, inner)[...] = values if self.out_max_val else index
        elif self.out_max_val:
            out = y.reshape(outer, 2, self.top_k)
            out[:, 0, :] = index[:, :, 0]
            out[:, 1, :] = values[:, :, 0]
        else:
            y.reshape(outer, self.top_k)[...] = index[:, :, 0]

    def backward_cpu(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("ArgMax has no backward (Caffe: NOT_IMPLEMENTED)")
