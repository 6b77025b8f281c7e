"""Bias: y = x + b, b broadcast over the leading and trailing axes (Caffe's BiasLayer).

bias_param: axis (1), num_axes (1; -1 = every axis from `axis` on), filler (constant 0).
One bottom: b is a learned blob of shape bottom.shape[axis : axis + num_axes].
Two bottoms: b = bottom[1], whose shape must equal bottom[0].shape[axis : axis + ndim(b)].
Caffe's decomposition: x viewed as (outer, bias_dim, inner), outer = count(0, axis),
bias_dim = count(b), inner = count(axis + ndim(b)); a scalar b uses axis 0.
  dx = dy;   db = sum over outer and inner of dy
In place allowed.
"""
import math

import numpy as np

from . import register
from .base import Layer
from ..fillers import fill
from ..kernels.channel import bias_forward, channel_sum


def param_shape(layer, bottom, axis, num_axes):
    """Shape of the learned blob of a one-bottom Bias/Scale layer."""
    axis = layer.canonical_axis(bottom, axis)
    if num_axes < -1:
        raise layer.error("num_axes must be non-negative, or -1 to extend to the end of "
                          "bottom[0]")
    if num_axes >= 0 and bottom.num_axes < axis + num_axes:
        raise layer.error(f"axis {axis} + num_axes {num_axes} is past the end of bottom[0] "
                          f"{bottom.shape}")
    end = None if num_axes == -1 else axis + num_axes
    return bottom.shape[axis:end]


def broadcast_dims(layer, bottom, operand_shape, axis):
    """(outer, dim, inner) of Caffe's Bias/Scale Reshape; checks the shapes match."""
    axis = 0 if len(operand_shape) == 0 else layer.canonical_axis(bottom, axis)
    if bottom.num_axes < axis + len(operand_shape):
        raise layer.error(f"operand shape {operand_shape} extends past bottom[0]'s shape "
                          f"{bottom.shape} when applied starting with bottom[0] axis = {axis}")
    for i, d in enumerate(operand_shape):
        if bottom.shape[axis + i] != d:
            raise layer.error(f"dimension mismatch between bottom[0]->shape({axis + i}) = "
                              f"{bottom.shape[axis + i]} and operand shape({i}) = {d}")
    outer = bottom.count_range(0, axis)
    dim = math.prod(operand_shape)     # math.prod: 0.1 us against np.prod's 2, per pass
    inner = bottom.count_range(axis + len(operand_shape))
    return outer, dim, inner


@register("Bias")
class BiasLayer(Layer):
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1:
            blob = self.make_blob(param_shape(self, bottom[0], p.axis, p.num_axes))
            fill(blob, p.filler)
            self.blobs = [blob]

    def reshape(self, bottom, top):
        operand = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.dims = broadcast_dims(self, bottom[0], operand.shape, self.param.bias_param.axis)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        b = (bottom[1] if len(bottom) > 1 else self.blobs[0]).data.reshape(-1)
        bias_forward(bottom[0].data.reshape(self.dims), b, top[0].data.reshape(self.dims))

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.dims)
        if propagate_down[0] and bottom[0] is not top[0]:
            np.copyto(bottom[0].diff, top[0].diff.reshape(bottom[0].shape))
        as_param = len(bottom) == 1
        if (as_param and self.param_propagate_down[0]) or (not as_param and propagate_down[1]):
            target = self.blobs[0] if as_param else bottom[1]
            total = np.empty(self.dims[1], self.dtype)
            channel_sum(dy, self.dtype.type(1), total)
            if as_param:
                target.diff.reshape(-1)[...] += total
            else:
                target.diff.reshape(-1)[...] = total
