"""Scale: y = x * s (+ b), s broadcast over the leading and trailing axes (Caffe's ScaleLayer).

scale_param: axis (1), num_axes (1; -1 = every axis from `axis` on), filler (constant 1),
bias_term (false), bias_filler (constant 0).
One bottom: s is a learned blob of shape bottom.shape[axis : axis + num_axes].
Two bottoms: s = bottom[1]. With bias_term a learned bias of s's shape follows (blobs:
[s, b] with one bottom, [b] with two), as Caffe's internal Bias layer adds it.
x is viewed as (outer, scale_dim, inner) as in Bias; a scalar s uses axis 0.
  dx = dy * s;   ds = sum over outer and inner of dy * x;   db = sum of dy
In place allowed (the input is kept for ds).
"""
import numpy as np

from . import register
from .base import Layer
from .bias import broadcast_dims, param_shape
from ..fillers import fill
from ..kernels.channel import channel_dot, channel_sum


@register("Scale")
class ScaleLayer(Layer):
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self.blobs = []
        if len(bottom) == 1:
            blob = self.make_blob(param_shape(self, bottom[0], p.axis, p.num_axes))
            if p.HasField("filler"):
                fill(blob, p.filler)
            else:
                blob.data[...] = 1
            self.blobs.append(blob)
        self.bias_index = None
        if p.bias_term:
            shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
            bias = self.make_blob(shape)
            fill(bias, p.bias_filler)
            self.bias_index = len(self.blobs)
            self.blobs.append(bias)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.dims = broadcast_dims(self, bottom[0], self._scale(bottom).shape,
                                   self.param.scale_param.axis)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        s = self._scale(bottom).data.reshape(-1)
        x = bottom[0].data.reshape(self.dims)
        # in place, keep the input for the scale gradient
        self._x = x.copy() if bottom[0] is top[0] else x
        y = top[0].data.reshape(self.dims)
        np.multiply(x, s[None, :, None], out=y)
        if self.bias_index is not None:
            y += self.blobs[self.bias_index].data.reshape(-1)[None, :, None]

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.dims)
        one = self.dtype.type(1)
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            total = np.empty(self.dims[1], self.dtype)
            channel_sum(dy, one, total)
            self.blobs[self.bias_index].diff.reshape(-1)[...] += total
        as_param = len(bottom) == 1
        scale = self._scale(bottom)
        if (as_param and self.param_propagate_down[0]) or (not as_param and propagate_down[1]):
            x = self._x if bottom[0] is top[0] else bottom[0].data.reshape(self.dims)
            total = np.empty(self.dims[1], self.dtype)
            channel_dot(dy, x, one, total)
            if as_param:
                scale.diff.reshape(-1)[...] += total
            else:
                scale.diff.reshape(-1)[...] = total
        if propagate_down[0]:
            s = scale.data.reshape(-1)
            np.multiply(dy, s[None, :, None], out=bottom[0].diff.reshape(self.dims))
