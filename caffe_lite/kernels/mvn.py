"""Mean-variance normalisation of rows, in the order of Caffe's MVNLayer BLAS calls.

x is (num, dim); each row is normalised on its own. `ones` is Caffe's sum_multiplier_.
"""
import numpy as np

from .reduction import row_gemv


def mvn_forward(x, ones, normalize_variance, eps, out, std):
    """out = (x - mean) [/ (sqrt(var) + eps)], var = mean((x - mean)^2); std[i] gets
    sqrt(var) + eps (what backward divides by). eps is added to the root, not the
    variance, as Caffe does."""
    num, dim = x.shape
    alpha = 1.0 / dim if dim else 0.0     # Dtype(1. / dim): a double rounded once
    mean = np.empty(num, x.dtype)
    row_gemv(x, ones, alpha, mean)
    np.subtract(x, mean[:, None], out=out)
    if normalize_variance:
        row_gemv(out * out, ones, alpha, std)
        np.sqrt(std, out=std)
        std += x.dtype.type(eps)
        out /= std[:, None]


def mvn_backward(y, dy, ones, normalize_variance, std, out):
    """d x from d y. With variance normalisation Caffe uses
        dx = (dy - mean(dy) - y * mean(y * dy)) / (sqrt(var) + eps),
    which treats eps as part of sqrt(var) (exact for eps = 0, and eps defaults to 1e-9)."""
    num, dim = y.shape
    alpha = 1.0 / dim if dim else 0.0
    s = np.empty(num, y.dtype)
    if not normalize_variance:
        row_gemv(dy, ones, alpha, s)
        np.subtract(dy, s[:, None], out=out)
        return
    row_gemv(y * dy, ones, 1.0, s)
    tmp = y * s[:, None]
    row_gemv(dy, ones, 1.0, s)
    tmp += s[:, None]
    # caffe_cpu_axpby(1, dy, -1/dim, tmp): tmp = dy + (-1/dim) * tmp
    tmp *= y.dtype.type(-alpha)
    np.add(dy, tmp, out=out)
    out /= std[:, None]
