"""Log: y = log_base(shift + scale * x), natural log when base == -1.

log_param { base: -1, scale: 1, shift: 0 }. Computed as Caffe does:
y = base_scale * log(shift + scale * x), base_scale = 1 / log(base);
dy/dx = (scale / log(base)) / (shift + scale * x). Backward reads x, so an in-place run keeps
a copy of it.
"""
import math

from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("Log")
class LogLayer(NeuronLayer):
    backward_needs_bottom = True

    def layer_setup(self, bottom, top):
        p = self.param.log_param
        base = self.scalar(p.base)
        if base != -1 and not base > 0:
            raise self.error(f"log_param.base must be strictly positive (or -1 for e), "
                             f"got {p.base}")
        log_base = self.scalar(1) if base == -1 else self.scalar(K.scalar_log(base))
        if math.isnan(log_base) or math.isinf(log_base):
            raise self.error(f"log(base) = log({p.base}) = {log_base}")
        if log_base == 0:
            raise self.error(f"1 / log(base) is infinite for base {p.base}")
        self.base_scale = self.scalar(1) / log_base
        self.scale = self.scalar(p.scale)
        self.shift = self.scalar(p.shift)
        self.backward_num_scale = self.scale / log_base

    def forward_flat(self, x, y):
        K.elementwise(K.log_forward, x, self.scale, self.shift, self.base_scale, y)

    def backward_flat(self, x, y, dy, dx):
        K.elementwise(K.log_backward, x, dy, self.scale, self.shift, self.backward_num_scale,
                      dx)
