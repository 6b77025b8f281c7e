"""Sigmoid: y = 1 / (1 + exp(-x)), computed as 0.5 * tanh(0.5 * x) + 0.5 as Caffe does.

sigmoid_param { engine } (ignored). Backward: dy * y * (1 - y), from the top alone, so in
place needs no copy.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    def forward_flat(self, x, y):
        K.elementwise(K.sigmoid_forward, x, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.sigmoid_backward, y, dy, dx)
