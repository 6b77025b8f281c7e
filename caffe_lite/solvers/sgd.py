"""SGD: Caffe's SGDSolver (sgd_solver.cpp), the base of every update rule.

ApplyUpdate, per iteration:
  rate = GetLearningRate()                                  (lr_policy.py)
  ClipGradients: if clip_gradients >= 0 and ||g||_2 over ALL learnable params > clip_gradients,
                 every g *= clip_gradients / ||g||_2
  per learnable param i:
    Normalize:          g /= iter_size                      (only when iter_size > 1)
    Regularize:         g += weight_decay * decay_mult_i * {w | sign(w)}   (regularizers.py)
    ComputeUpdateValue: the rule; for SGD with local_rate = rate * lr_mult_i:
                        v = momentum * v + local_rate * g;  g = v
    update masks / param_update_hooks (forks)
  net.update():         w -= g

Fields: base_lr, lr_policy (+ gamma, power, stepsize, stepvalue, max_iter), momentum (0),
weight_decay (0), regularization_type ("L2"), clip_gradients (-1), iter_size (1).
History: one blob per learnable param (the momentum v), saved in the .solverstate.
"""
import numpy as np

from ..log import LOG
from .base import Solver, fmt
from .factory import register_solver


@register_solver("SGD")
class SGDSolver(Solver):
    #: history blobs per learnable param (AdaDelta and Adam keep two)
    history_sets = 1

    def pre_solve(self):
        params = self.net.learnable_params
        self.history = [np.zeros(b.shape, b.data.dtype)
                        for _ in range(self.history_sets) for b in params]
        # scratch buffers, as Caffe's update_ and temp_
        self._update = [np.zeros(b.shape, b.data.dtype) for b in params]
        self._temp = [np.zeros(b.shape, b.data.dtype) for b in params]

    def apply_update(self):
        rate = self.get_learning_rate()
        self.learning_rate = rate
        p = self.param
        if p.display and self.iter % p.display == 0:
            LOG.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        self.clip_gradients()
        for param_id in range(len(self.net.learnable_params)):
            self.normalize(param_id)
            self.regularize(param_id)
            self.compute_update_value(param_id, rate)
            self._after_update_value(param_id)
        self.net.update()

    def clip_gradients(self):
        clip = np.float32(self.param.clip_gradients)
        if clip < 0:
            return
        params = self.net.learnable_params
        sumsq = np.float32(sum(float(np.dot(b.diff.ravel(), b.diff.ravel())) for b in params))
        l2norm = np.float32(np.sqrt(sumsq))
        if l2norm > clip:
            scale = np.float32(clip / l2norm)
            LOG.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                     "factor %s", fmt(l2norm), fmt(clip), fmt(scale))
            for b in params:
                b.diff[...] *= scale

    def normalize(self, param_id):
        if self.param.iter_size == 1:
            return
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        blob.diff[...] *= dt(1) / dt(self.param.iter_size)

    def regularize(self, param_id):
        for term in self.regularization_terms:
            term(self, param_id)

    def local_rate(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        return dt(rate) * dt(self.net.params_lr[param_id])

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        g, h = blob.diff, self.history[param_id]
        # caffe_cpu_axpby: h = momentum * h + local_rate * g
        h *= dt(self.param.momentum)
        h += self.local_rate(param_id, rate) * g
        g[...] = h
