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
            self.mask = (rng().random(x.shape) < 1.0 - self.ratio).astype(self.dtype)
            np.multiply(x, self.mask, out=y)
            y *= self.train_scale
        elif y is not x:
            np.copyto(y, x)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == TRAIN:
            np.multiply(dy, self.mask, out=dx)
            dx *= self.train_scale
        elif dx is not dy:
            np.copyto(dx, dy)
