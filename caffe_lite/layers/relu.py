"""ReLU: y = max(x, 0) + negative_slope * min(x, 0) (leaky when negative_slope != 0).

relu_param { negative_slope: 0 }. Backward: dy * (1 if x > 0 else negative_slope), gated on
the bottom data; in place that is the top, which keeps the sign of x for negative_slope >= 0
(a negative slope in place keeps a copy of x instead).
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("ReLU")
class ReLULayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.negative_slope = self.scalar(self.param.relu_param.negative_slope)
        self.backward_needs_bottom = bool(self.negative_slope < 0)

    def forward_flat(self, x, y):
        if K.same_buffer(x, y):
            K.elementwise(K.relu_forward_in_place, y, self.negative_slope,
                          parallel_min=K.STREAMING_MIN)
        else:
            K.elementwise(K.relu_forward, x, self.negative_slope, y,
                          parallel_min=K.STREAMING_MIN)

    def backward_flat(self, x, y, dy, dx):
        if K.same_buffer(dy, dx) and not K.same_buffer(x, dx):
            K.elementwise(K.relu_backward_in_place, x, dx, self.negative_slope,
                          parallel_min=K.STREAMING_MIN)
        else:
            K.elementwise(K.relu_backward, x, dy, self.negative_slope, dx,
                          parallel_min=K.STREAMING_MIN)
