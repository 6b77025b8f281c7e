"""Exp: y = base ^ (shift + scale * x), base e when base == -1.

exp_param { base: -1, scale: 1, shift: 0 }. Computed as Caffe does:
y = outer_scale * exp(inner_scale * x), inner_scale = log(base) * scale,
outer_scale = base ^ shift; dy/dx = inner_scale * y (from the top alone).
"""
import math

from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("Exp")
class ExpLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.exp_param
        base = self.scalar(p.base)
        if base != -1 and not base > 0:
            raise self.error(f"exp_param.base must be strictly positive (or -1 for e), "
                             f"got {p.base}")
        log_base = self.scalar(1) if base == -1 else self.scalar(K.scalar_log(base))
        if math.isnan(log_base) or math.isinf(log_base):
            raise self.error(f"log(base) = log({p.base}) = {log_base}")
        scale = self.scalar(p.scale)
        shift = self.scalar(p.shift)
        self.inner_scale = log_base * scale
        if shift == 0:
            self.outer_scale = self.scalar(1)
        elif base != -1:
            self.outer_scale = self.scalar(K.scalar_pow(base, shift))
        else:
            self.outer_scale = self.scalar(K.scalar_exp(shift))

    def forward_flat(self, x, y):
        K.elementwise(K.exp_forward, x, self.inner_scale, self.outer_scale, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.exp_backward, y, dy, self.inner_scale, dx)
