"""AbsVal: y = |x|; backward dy * sign(x) (sign(0) = 0).

No parameters. Caffe refuses to run it in place; here an in-place run keeps a copy of x, so
it gives the out-of-place result.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    backward_needs_bottom = True

    def forward_flat(self, x, y):
        K.elementwise(K.absval_forward, x, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.absval_backward, x, dy, dx)
