"""HingeLoss: one-vs-all hinge over the scores of each example.

E = 1/N sum_n sum_k max(0, 1 - delta(l_n = k) x_nk)^p, delta = +1 at the label and -1
elsewhere; p = 1 for norm L1, 2 for L2. hinge_loss_param { norm: L1 }.
bottom[0] scores (N x K, any trailing shape flattened), bottom[1] labels (N values).
Backward: L1 -w/N delta sign(margin), L2 -2w/N delta margin; no gradient to the labels.
"""
import numpy as np

from ..kernels import losses as L
from ..proto import caffe_pb2
from . import register
from .base import Layer

L1 = caffe_pb2.HingeLossParameter.L1
L2 = caffe_pb2.HingeLossParameter.L2


@register("HingeLoss")
class HingeLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def layer_setup(self, bottom, top):
        self.norm = self.param.hinge_loss_param.norm
        if self.norm not in (L1, L2):
            raise self.error(f"unknown hinge_loss_param.norm {self.norm}")
        self._margins = None

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"the data and label should have the same first dimension "
                             f"({bottom[0].shape} vs {bottom[1].shape})")
        top[0].reshape(())
        if self._margins is None or self._margins.shape != bottom[0].shape:
            self._margins = np.zeros(bottom[0].shape, self.dtype)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def _dims(self, bottom):
        num = bottom[0].shape[0]
        return num, bottom[0].count // num if num else 0

    def forward_cpu(self, bottom, top):
        num, dim = self._dims(bottom)
        label = bottom[1].data.reshape(-1)
        index = label[:num].astype(np.int64)        # static_cast<int>: toward zero
        bad = (index < 0) | (index >= dim)
        if bad.any():
            raise self.error(f"label {label[:num][bad][0]} out of range [0, {dim})")
        m = self._margins.reshape(-1)
        L.hinge_margins(bottom[0].data.reshape(-1), label, num, dim, m)
        if self.norm == L1:
            total = self.dtype.type(np.abs(m, dtype=np.float64).sum())
        else:
            total = self.dtype.type(np.dot(m, m))
        top[0].data[...] = total / self.dtype.type(num)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs")
        if not propagate_down[0]:
            return
        num, dim = self._dims(bottom)
        weight = top[0].diff.reshape(-1)[0]
        dt = self.dtype.type
        scale = weight / dt(num) if self.norm == L1 else weight * dt(2) / dt(num)
        L.hinge_backward(self._margins.reshape(-1), bottom[1].data.reshape(-1), num, dim,
                         self.norm == L1, scale, bottom[0].diff.reshape(-1))
