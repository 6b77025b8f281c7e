"""AdaGrad: Caffe's AdaGradSolver (adagrad_solver.cpp).

With local_rate = rate * lr_mult, delta (1e-8), history h (sum of squared gradients):
  h += g^2
  g = local_rate * g / (sqrt(h) + delta)
momentum must be 0 ("Momentum cannot be used with AdaGrad.").
"""
import numpy as np

from .factory import register_solver
from .sgd import SGDSolver


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    def validate(self):
        if self.param.momentum != 0:
            raise self.where("momentum", "Momentum cannot be used with AdaGrad.")

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        g, h, u = blob.diff, self.history[param_id], self._update[param_id]
        np.multiply(g, g, out=u)
        h += u
        np.sqrt(h, out=u)
        u += dt(self.param.delta)
        np.divide(g, u, out=u)
        np.multiply(u, self.local_rate(param_id, rate), out=g)
