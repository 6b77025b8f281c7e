"""RMSProp: Caffe's RMSPropSolver (rmsprop_solver.cpp).

With local_rate = rate * lr_mult, rms_decay d (0.99), delta (1e-8), history h:
  h = d * h + (1 - d) * g^2
  g = local_rate * g / (sqrt(h) + delta)
momentum must be 0; 0 <= rms_decay < 1.
"""
import numpy as np

from .factory import register_solver
from .sgd import SGDSolver


@register_solver("RMSProp")
class RMSPropSolver(SGDSolver):
    def validate(self):
        if self.param.momentum != 0:
            raise self.where("momentum", "Momentum cannot be used with RMSProp.")
        if not 0 <= self.param.rms_decay < 1:
            raise self.where("rms_decay", "rms_decay should lie between 0 and 1 "
                             f"(got {self.param.rms_decay:g})")

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        d = dt(self.param.rms_decay)
        g, h, u = blob.diff, self.history[param_id], self._update[param_id]
        np.multiply(g, g, out=u)
        # caffe_cpu_axpby(1 - d, u, d, h)
        h *= d
        u *= dt(1) - d
        h += u
        np.sqrt(h, out=u)
        u += dt(self.param.delta)
        np.divide(g, u, out=u)
        np.multiply(u, self.local_rate(param_id, rate), out=g)
