"""Nesterov's accelerated gradient: Caffe's NesterovSolver (nesterov_solver.cpp).

With local_rate = rate * lr_mult, momentum mu, history v (one blob per param):
  v_prev = v
  v = mu * v + local_rate * g
  g = (1 + mu) * v - mu * v_prev
Other steps (clipping, normalisation, regularisation) as SGD.
"""
from .factory import register_solver
from .sgd import SGDSolver


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        mu = dt(self.param.momentum)
        g, h, prev = blob.diff, self.history[param_id], self._update[param_id]
        prev[...] = h
        h *= mu
        h += self.local_rate(param_id, rate) * g
        # caffe_cpu_axpby(1 + mu, h, -mu, prev): prev = (1 + mu) * h - mu * prev
        prev *= -mu
        prev += (dt(1) + mu) * h
        g[...] = prev
