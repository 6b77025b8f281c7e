"""Reduction: reduce all axes from `axis` on to one number per leading index
(Caffe's ReductionLayer).

  top[i] = coeff * op(bottom[i, :])   with bottom viewed as (prod(shape[:axis]), rest)
  op: SUM = sum x, ASUM = sum |x|, SUMSQ = sum x^2, MEAN = sum x / dim
  bottom.diff[i, :] = top.diff[i] * coeff * (1 | sign(x) | 2x | 1/dim)
top.shape = bottom.shape[:axis] (axis 0: a scalar).

reduction_param:
  operation  SUM | ASUM | SUMSQ | MEAN (default SUM)
  axis       int32, default 0 (negative counts from the end)
  coeff      float, default 1
"""
import numpy as np

from ..kernels import reduction as K
from ..proto import caffe_pb2
from . import register
from .base import Layer

_P = caffe_pb2.ReductionParameter


@register("Reduction")
class ReductionLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.op = self.param.reduction_param.operation
        if self.op not in (_P.SUM, _P.ASUM, _P.SUMSQ, _P.MEAN):
            raise self.error(f"Unknown reduction operation {self.op}")
        self.ones = None

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        axis = self.canonical_axis(bottom[0], p.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num = bottom[0].count_range(0, axis)
        self.dim = bottom[0].count_range(axis)
        if self.op in (_P.SUM, _P.MEAN) and (self.ones is None or self.ones.size != self.dim):
            self.ones = np.ones(self.dim, self.dtype)
        # coeff_ is a Dtype in Caffe; MEAN divides it by dim in that precision
        self.coeff = self.dtype.type(p.coeff)
        if self.op == _P.MEAN:
            self.coeff = self.coeff / self.dtype.type(self.dim)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        out = top[0].data.reshape(self.num)
        if self.op in (_P.SUM, _P.MEAN):
            K.row_sums(x, self.ones, out)
        elif self.op == _P.ASUM:
            K.row_asums(x, out)
        else:
            K.row_sumsq(x, out)
        if self.coeff != 1:
            out *= self.coeff

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = (top[0].diff.reshape(self.num, 1) * self.coeff).astype(self.dtype, copy=False)
        x = bottom[0].data.reshape(self.num, self.dim)
        diff = bottom[0].diff.reshape(self.num, self.dim)
        if self.op in (_P.SUM, _P.MEAN):
            np.copyto(diff, scale)
        elif self.op == _P.ASUM:
            K.sign(x, diff)
            diff *= scale
        else:
            np.multiply(x, 2 * scale, out=diff)
