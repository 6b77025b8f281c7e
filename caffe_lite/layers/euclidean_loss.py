"""EuclideanLoss: E = 1 / (2N) * sum_i ||a_i - b_i||^2, N = a.shape[0].

No parameters beyond loss_param. bottom[0] and bottom[1] must have the same count; both get
a gradient (sign + for a, - for b), scaled by the loss weight: d a = w / N * (a - b).
"""
import numpy as np

from . import register
from .base import Layer


@register("EuclideanLoss")
class EuclideanLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"the data and label should have the same first dimension "
                             f"({bottom[0].shape} vs {bottom[1].shape})")
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same count ({bottom[0].shape} vs "
                             f"{bottom[1].shape})")
        top[0].reshape(())
        if getattr(self, "_diff", None) is None or self._diff.shape != bottom[0].shape:
            self._diff = np.zeros(bottom[0].shape, self.dtype)

    def allow_force_backward(self, bottom_index):
        return True

    def forward_cpu(self, bottom, top):
        np.subtract(bottom[0].data, bottom[1].data.reshape(bottom[0].shape), out=self._diff)
        d = self._diff.reshape(-1)
        # BLAS dot, as caffe_cpu_dot: the same summation order as Caffe's OpenBLAS
        dot = self.dtype.type(np.dot(d, d))
        num = self.dtype.type(bottom[0].shape[0])
        top[0].data[...] = dot / num / self.dtype.type(2)

    def backward_cpu(self, top, propagate_down, bottom):
        weight = top[0].diff.reshape(-1)[0]
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = self.dtype.type(sign) * weight / self.dtype.type(bottom[i].shape[0])
                np.multiply(self._diff.reshape(bottom[i].shape), alpha, out=bottom[i].diff)
