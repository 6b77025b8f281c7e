"""Adam: Caffe's AdamSolver (adam_solver.cpp).

With local_rate = rate * lr_mult, beta1 = momentum (0.9), beta2 = momentum2 (0.999),
eps = delta (1e-8), t = iter + 1, and two history blobs per param (m, then v):
  m = beta1 * m + (1 - beta1) * g
  v = beta2 * v + (1 - beta2) * g^2
  g = local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
The .solverstate holds 2N history blobs, all m first.
"""
import math

import numpy as np

from .factory import register_solver
from .sgd import SGDSolver


@register_solver("Adam")
class AdamSolver(SGDSolver):
    history_sets = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        n = len(self.net.learnable_params)
        beta1, beta2 = dt(self.param.momentum), dt(self.param.momentum2)
        t = self.iter + 1
        # pow(float, int) runs in double in C++; the result is stored as a float
        correction = dt(math.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        g = blob.diff
        m, v, tmp = self.history[param_id], self.history[n + param_id], self._temp[param_id]
        m *= beta1
        m += (dt(1) - beta1) * g
        np.multiply(g, g, out=tmp)
        v *= beta2
        tmp *= dt(1) - beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += dt(self.param.delta)
        np.divide(m, tmp, out=tmp)
        np.multiply(tmp, self.local_rate(param_id, rate) * correction, out=g)
