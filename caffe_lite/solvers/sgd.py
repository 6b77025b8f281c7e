"""SGD: Caffe's SGDSolver (sgd_solver.cpp), the base of every update rule.

ApplyUpdate, per iteration:
  rate = GetLearningRate()                                  (lr_policy.py)
  ClipGradients: if clip_gradients >= 0 and ||g||_2 over ALL learnable params > clip_gradients,
                 every g *= clip_gradients / ||g||_2
  per learnable param i that updates (state blobs never do):
    Normalize:          g /= iter_size                      (only when iter_size > 1)
    Regularize:         g += weight_decay * decay_mult_i * {w | sign(w)}   (regularizers.py),
                        then the hooks' regularize terms (hooks.py)
    ComputeUpdateValue: the rule; for SGD with local_rate = rate * lr_mult_i (after the
                        hooks' lr_mult): v = momentum * v + local_rate * g;  g = v
                        then the hooks' update_value (masks)
  update:               w -= g for every updated param, then the hooks' after_update and
                        after_step

Fields: base_lr, lr_policy (+ gamma, power, stepsize, stepvalue, max_iter), momentum (0),
weight_decay (0), regularization_type ("L2"), clip_gradients (-1), iter_size (1).
History: one blob per learnable param (the momentum v), saved in the .solverstate.
"""
import numpy as np

from ..kernels.neuron import STREAMING_MIN, elementwise
from ..kernels.sgd_update import sgd_update
from ..log import LOG
from . import regularizers
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
        if self._fuses_update():
            self._fused_update(rate)
            return
        it = self.iter
        for param in self.params:
            self.normalize(param.index)
            self.regularize(param)
            self.compute_update_value(param.index, rate)
            for hook in self.hooks:
                hook.update_value(param, it)
        for param in self.params:
            param.blob.update()
        for hook in self.hooks:
            for param in self.params:
                hook.after_update(param, it)
        for hook in self.hooks:
            hook.after_step(self.params, it)

    def _fuses_update(self):
        """Whether the update can run as one pass per param (kernels/sgd_update.py): plain
        SGD's steps, one iteration per update, every hook idle, no L1 penalty."""
        cls = type(self)
        busy = any(not (callable(getattr(hook, "idle", None)) and hook.idle())
                   for hook in self.hooks)
        if (busy or self.param.iter_size != 1
                or cls.compute_update_value is not SGDSolver.compute_update_value
                or cls.regularize is not SGDSolver.regularize
                or regularizers.REGULARIZERS.get("L2") is not regularizers.l2):
            return False
        return all(self.regularization_types[p.index] == "L2" or not self._local_decay(p)
                   for p in self.params)

    def _local_decay(self, param):
        return regularizers.local_decay(self.param.weight_decay,
                                        self.net.params_weight_decay[param.index])

    def _fused_update(self, rate):
        for param in self.params:
            i = param.index
            blob = self.net.learnable_params[i]
            dt = blob.diff.dtype.type
            decay = self._local_decay(param)
            elementwise(sgd_update, blob.data.reshape(-1), blob.diff.reshape(-1),
                        self.history[i].reshape(-1), dt(decay), dt(self.param.momentum),
                        self.local_rate(i, rate), bool(decay), parallel_min=STREAMING_MIN)

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

    def regularize(self, param):
        kind = self.regularization_types[param.index]
        regularizers.weight_decay(param.data, param.diff, kind, self.param.weight_decay,
                                  self.net.params_weight_decay[param.index])
        for hook in self.hooks:
            hook.regularize(param, self.iter)

    def local_rate(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        return dt(rate) * dt(self.lr_mult(param_id))

    def lr_mult(self, param_id):
        """The param's lr_mult after the hooks' changes (the solver's own is the ParamSpec's)."""
        lr_mult = self.net.params_lr[param_id]
        if self.hooks:
            param = self._params_by_index[param_id]
            for hook in self.hooks:
                lr_mult = hook.lr_mult(param, lr_mult, self.iter)
        return lr_mult

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        dt = blob.diff.dtype.type
        g, h = blob.diff, self.history[param_id]
        # caffe_cpu_axpby: h = momentum * h + local_rate * g
        h *= dt(self.param.momentum)
        h += self.local_rate(param_id, rate) * g
        g[...] = h
