"""BNLL (binomial normal log likelihood): y = log(1 + exp(x)), computed stably as
x + log(1 + exp(-x)) for x > 0.

No parameters. Backward: dy * e / (e + 1), e = exp(min(x, 50)); reads x, so an in-place run
keeps a copy.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("BNLL")
class BNLLLayer(NeuronLayer):
    backward_needs_bottom = True

    def forward_flat(self, x, y):
        K.elementwise(K.bnll_forward, x, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.bnll_backward, x, dy, dx)
