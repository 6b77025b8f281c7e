"""InnerProduct (Caffe's InnerProductLayer): a fully connected layer.

    y = x W^T + b       x viewed as (M, K): M = count(0, axis), K = count(axis)
    y = x W   + b       with transpose: true (W stored as K x N)

inner_product_param: num_output N (required), bias_term true, weight_filler (constant 0),
bias_filler (constant 0), axis 1, transpose false.
blobs: [weight (N, K), or (K, N) with transpose; bias (N,)]. Top shape:
bottom.shape[:axis] + (N,). Backward: dW += dy^T x (x^T dy with transpose), db += sum over
rows of dy, dx = dy W (dy W^T with transpose), overwriting.
"""
from .. import fillers
from ..kernels.gemm import parallel_matmul
from . import register
from .base import Layer


@register("InnerProduct")
class InnerProductLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = p.num_output
        if self.num_output <= 0:
            raise self.error("num_output must be > 0")
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = self.canonical_axis(bottom[0], p.axis)
        self.k = bottom[0].count_range(self.axis)
        n, k = self.num_output, self.k
        shapes = [(k, n) if self.transpose else (n, k)]
        if self.bias_term:
            shapes.append((n,))
        if len(self.param.blobs):
            self.blobs = self.blobs_from_param(shapes)
        else:
            self.blobs = [self.make_blob(s) for s in shapes]
            fillers.fill(self.blobs[0], p.weight_filler)
            if self.bias_term:
                fillers.fill(self.blobs[1], p.bias_filler)

    def effective_weight(self):
        """The weight forward and backward use (masked/quantized fork layers override)."""
        w = self.blobs[0].data
        return w if self.param_transform is None else self.param_transform(0, w)

    def effective_bias(self):
        """The bias forward uses, or None without one (fork layers override)."""
        if not self.bias_term:
            return None
        b = self.blobs[1].data
        return b if self.param_transform is None else self.param_transform(1, b)

    def reshape(self, bottom, top):
        axis = self.canonical_axis(bottom[0], self.param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        if k != self.k:
            raise self.error(f"Input size incompatible with inner product parameters: "
                             f"bottom {bottom[0].shape} gives K = {k} from axis {axis}, "
                             f"the weights expect {self.k}")
        self.m = bottom[0].count_range(0, axis)
        top[0].reshape(tuple(bottom[0].shape[:axis]) + (self.num_output,))

    def forward_cpu(self, bottom, top):
        w = self.effective_weight()
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        parallel_matmul(x, w if self.transpose else w.T, y)
        bias = self.effective_bias()
        if bias is not None:
            y += bias

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            if self.transpose:
                dw = self.blobs[0].diff.reshape(self.k, self.num_output)
                parallel_matmul(x.T, dy, dw, accumulate=True)
            else:
                dw = self.blobs[0].diff.reshape(self.num_output, self.k)
                parallel_matmul(dy.T, x, dw, accumulate=True)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.effective_weight()
            parallel_matmul(dy, w.T if self.transpose else w,
                            bottom[0].diff.reshape(self.m, self.k))
