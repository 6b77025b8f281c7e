"""TanH: y = tanh(x).

tanh_param { engine } (ignored). Backward: dy * (1 - y^2), from the top alone.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("TanH")
class TanHLayer(NeuronLayer):
    def forward_flat(self, x, y):
        K.elementwise(K.tanh_forward, x, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.tanh_backward, y, dy, dx)
