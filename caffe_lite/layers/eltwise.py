"""Eltwise: element-wise product, weighted sum or maximum of same-shaped bottoms.

  PROD: top = b0 * b1 * ...    d/d b_i = top_diff * prod_{j != i} b_j  (stable_prod_grad)
                                         top_diff * top / b_i           (otherwise)
  SUM:  top = sum_i coeff_i * b_i        d/d b_i = coeff_i * top_diff
  MAX:  top = max_i b_i                  d/d b_i = top_diff where b_i won, else 0

eltwise_param:
  operation         PROD | SUM | MAX (default SUM)
  coeff             repeated float, one per bottom, SUM only (default all 1)
  stable_prod_grad  bool (default true)
"""
import numpy as np

from ..kernels import eltwise as K
from ..proto import caffe_pb2
from . import register
from .base import Layer

_P = caffe_pb2.EltwiseParameter


@register("Eltwise")
class EltwiseLayer(Layer):
    min_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.eltwise_param
        if len(p.coeff) not in (0, len(bottom)):
            raise self.error("Eltwise Layer takes one coefficient per bottom blob "
                             f"({len(bottom)} bottoms, {len(p.coeff)} coeff)")
        if p.operation == _P.PROD and len(p.coeff):
            raise self.error("Eltwise layer only takes coefficients for summation.")
        if p.operation not in (_P.PROD, _P.SUM, _P.MAX):
            raise self.error(f"Unknown elementwise operation {p.operation}.")
        self.op = p.operation
        # coeffs_ is a vector<Dtype> in Caffe: round the float field to the layer's dtype
        coeffs = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom)
        self.coeffs = [self.dtype.type(c) for c in coeffs]
        self.stable_prod_grad = p.stable_prod_grad
        self.max_idx = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != shape:
                raise self.error(f"bottom[{i}] has shape {b.shape}, bottom[0] {shape}; "
                                 "all bottoms must have the same shape")
        top[0].reshape(shape)
        if self.op == _P.MAX and (self.max_idx is None or self.max_idx.shape != shape):
            self.max_idx = np.zeros(shape, np.int32)

    def forward_cpu(self, bottom, top):
        data = [b.data for b in bottom]
        if self.op == _P.PROD:
            K.eltwise_prod(data, top[0].data)
        elif self.op == _P.SUM:
            K.eltwise_sum(data, self.coeffs, top[0].data)
        else:
            K.eltwise_max(data, top[0].data, self.max_idx)

    def backward_cpu(self, top, propagate_down, bottom):
        top_data, top_diff = top[0].data, top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == _P.PROD:
                K.eltwise_prod_grad([x.data for x in bottom], i, top_data, top_diff,
                                    self.stable_prod_grad, b.diff)
            elif self.op == _P.SUM:
                if self.coeffs[i] == 1:
                    np.copyto(b.diff, top_diff)
                else:
                    np.multiply(top_diff, self.coeffs[i], out=b.diff)
            else:
                K.eltwise_max_grad(self.max_idx, i, top_diff, b.diff)
