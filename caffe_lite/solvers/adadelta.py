"""AdaDelta: Caffe's AdaDeltaSolver (adadelta_solver.cpp).

With local_rate = rate * lr_mult (base_lr is usually 1), momentum rho, delta eps, and two
history blobs per param (history[i]: E[g^2], history[N + i]: E[dx^2]):
  E[g^2]  = rho * E[g^2] + (1 - rho) * g^2
  g       = g * sqrt((E[dx^2] + eps) / (E[g^2] + eps))
  E[dx^2] = rho * E[dx^2] + (1 - rho) * g^2
  g       = local_rate * g
The .solverstate holds 2N history blobs, gradients' first.
"""
import numpy as np

from .factory import register_solver
from .sgd import SGDSolver


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    history_sets = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        n = len(self.net.learnable_params)
        rho = dt(self.param.momentum)
        one_minus = dt(1) - rho
        eps = dt(self.param.delta)
        g = blob.diff
        hg, hx = self.history[param_id], self.history[n + param_id]
        u, t = self._update[param_id], self._temp[param_id]
        np.multiply(g, g, out=u)
        hg *= rho
        u *= one_minus
        hg += u
        np.add(hx, eps, out=u)
        np.add(hg, eps, out=t)
        np.divide(u, t, out=u)
        np.sqrt(u, out=u)
        g *= u
        np.multiply(g, g, out=u)
        hx *= rho
        u *= one_minus
        hx += u
        g *= self.local_rate(param_id, rate)
