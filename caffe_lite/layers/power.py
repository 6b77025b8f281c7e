"""Power: y = (shift + scale * x) ^ power.

power_param { power: 1, scale: 1, shift: 0 }. Caffe's special cases are kept: with
power * scale == 0 the top is constant (1 if power == 0, else shift ^ power) and the gradient
is 0; power == 1 gives the constant gradient power * scale; power == 2 and shift == 0 have
their own formulas. Backward reads x and y, so an in-place run keeps a copy of x.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("Power")
class PowerLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.power_param
        self.power = self.scalar(p.power)
        self.scale = self.scalar(p.scale)
        self.shift = self.scalar(p.shift)
        diff_scale = self.power * self.scale
        self.backward_needs_bottom = not (diff_scale == 0 or self.power == 1)

    def forward_flat(self, x, y):
        K.elementwise(K.power_forward, x, self.power, self.scale, self.shift, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.power_backward, x, y, dy, self.power, self.scale, self.shift, dx)
