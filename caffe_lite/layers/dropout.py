"""Dropout (Caffe's DropoutLayer): random zeroing in TRAIN, identity in TEST.

dropout_param: dropout_ratio p (0.5).
  TRAIN: mask ~ Bernoulli(1 - p) from caffe_lite.common.rng(); y = x * mask * 1/(1 - p)
         dx = dy * mask * 1/(1 - p)
  TEST:  y = x, dx = dy
One bottom, one top; in place allowed.
"""
import numpy as np

from . import register
from .base import Layer
from ..common import TRAIN, rng
from ..kernels.dropout import dropout_backward, dropout_forward
from ..kernels.gemm import WORKSPACE
from ..kernels.neuron import STREAMING_MIN, elementwise, same_buffer


@register("Dropout")
class DropoutLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        # Caffe computes 1 / (1 - p) in double and keeps it in the data type
        self.train_scale = self.dtype.type(1.0 / (1.0 - self.ratio))

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase == TRAIN:
            # the same draws as rng().random(x.shape), into scratch that every layer shares
            uniform = WORKSPACE.get("dropout_uniform", x.shape, np.float64)
            rng().random(out=uniform)
            self.mask = self._buffer("mask", x.shape, self.dtype)
            elementwise(dropout_forward, x.reshape(-1), uniform.reshape(-1), 1.0 - self.ratio,
                        self.train_scale, self.mask.reshape(-1), y.reshape(-1),
                        same_buffer(x, y), parallel_min=STREAMING_MIN)
        elif y is not x:
            np.copyto(y, x)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == TRAIN:
            elementwise(dropout_backward, dy.reshape(-1), self.mask.reshape(-1),
                        self.train_scale, dx.reshape(-1), same_buffer(dy, dx),
                        parallel_min=STREAMING_MIN)
        elif dx is not dy:
            np.copyto(dx, dy)

    def _buffer(self, name, shape, dtype):
        """A buffer kept across passes (no fresh pages to fault in every iteration)."""
        buf = getattr(self, name, None)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            setattr(self, name, buf)
        return buf
