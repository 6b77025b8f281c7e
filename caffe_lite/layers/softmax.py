"""Softmax over one axis (Caffe's SoftmaxLayer).

softmax_param: axis (1; negative counts from the end), engine (ignored).
  y = exp(x - max_axis x) / sum_axis exp(x - max_axis x)
  dx = (dy - sum_axis(dy * y)) * y
The blob is viewed as (outer, channels, inner) around `axis`. One bottom, one top.
"""
from . import register
from .base import Layer
from ..kernels.softmax import softmax_backward, softmax_forward


def softmax_dims(layer, blob, axis):
    """(axis, (outer, channels, inner)) of `blob` around `axis`, errors naming `layer`."""
    axis = layer.canonical_axis(blob, axis)
    return axis, (blob.count_range(0, axis), blob.shape[axis], blob.count_range(axis + 1))


@register("Softmax")
class SoftmaxLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis, self.dims = softmax_dims(self, bottom[0], self.param.softmax_param.axis)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        softmax_forward(bottom[0].data.reshape(self.dims), top[0].data.reshape(self.dims))

    def backward_cpu(self, top, propagate_down, bottom):
        # Caffe's Softmax ignores propagate_down: backward always writes the bottom diff
        softmax_backward(top[0].data.reshape(self.dims), top[0].diff.reshape(self.dims),
                         bottom[0].diff.reshape(self.dims))
