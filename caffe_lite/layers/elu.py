"""ELU: y = x if x > 0 else alpha * (exp(x) - 1) (Clevert et al. 2015).

elu_param { alpha: 1 }. Backward: dy * (1 if x > 0 else alpha + y), reading x and y as
Caffe does; in place that needs no copy for alpha >= 0 (y keeps the sign of x).
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("ELU")
class ELULayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.alpha = self.scalar(self.param.elu_param.alpha)
        self.backward_needs_bottom = bool(self.alpha < 0)

    def forward_flat(self, x, y):
        K.elementwise(K.elu_forward, x, self.alpha, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.elu_backward, x, y, dy, self.alpha, dx)
