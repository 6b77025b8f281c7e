"""LarsSGD: NNMC's layer-wise adaptive rate scaling (larssgd_solver.cpp; You et al., "Large
Batch Training of Convolutional Networks"), type "LarsSGD" or solver_type LARSSGD (6).

SGD with momentum whose local rate is, per learnable param (after weight decay was added to
its gradient, since Regularize runs first):
  local_rate = rate * local_gw_ratio * ||w|| / (||g|| + weight_decay * ||w||)
  (rate * 1 when ||w|| = 0 or ||g|| = 0, so zero-initialised biases take a plain step)
with the norms over the param in float, as NNMC's sumsq_data / sumsq_diff. The rule ignores
lr_mult (NNMC's does), and uses the global weight_decay, not decay_mult. Fields: those of SGD
plus local_gw_ratio (0.001).
"""
import numpy as np

from .factory import register_solver
from .sgd import SGDSolver


def lars_rate(w, g, gw_ratio, weight_decay):
    """The LARS multiplier of the global rate for a param w with gradient g (float32)."""
    f = np.float32
    w_norm = np.sqrt(f(np.dot(w.ravel(), w.ravel())), dtype=f)
    g_norm = np.sqrt(f(np.dot(g.ravel(), g.ravel())), dtype=f)
    if w_norm > 0 and g_norm > 0:
        return f(f(gw_ratio) * w_norm / (g_norm + f(weight_decay) * w_norm))
    return f(1)


@register_solver("LarsSGD")
class LarsSGDSolver(SGDSolver):
    def local_rate(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        p = self.param
        return dt(rate) * dt(lars_rate(blob.data, blob.diff, p.local_gw_ratio, p.weight_decay))
