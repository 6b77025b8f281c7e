"""Row reductions with Caffe's BLAS calls: one dot / asum per row, as ReductionLayer and
MVNLayer make them.

Caffe reduces row by row with cblas_sdot (sum as a dot with a vector of ones, the sum of
squares as x . x) or cblas_sasum. np.dot on 1-D float arrays is the same cblas_sdot call in
NumPy's bundled OpenBLAS, so a row loop reproduces Caffe's accumulation order. Above
`ROW_LOOP_MAX` rows the Python loop costs more than it is worth and one vectorised pass is
used instead (same values up to the last bits of the sum).
"""
import numpy as np

ROW_LOOP_MAX = 1024


def row_sums(x, ones, out):
    """out[i] = dot(x[i], ones): Caffe's caffe_cpu_dot(dim, sum_multiplier, row)."""
    if x.shape[0] <= ROW_LOOP_MAX:
        for i in range(x.shape[0]):
            out[i] = np.dot(x[i], ones)
    else:
        np.matmul(x, ones, out=out)


def row_sumsq(x, out):
    """out[i] = dot(x[i], x[i])."""
    if x.shape[0] <= ROW_LOOP_MAX:
        for i in range(x.shape[0]):
            out[i] = np.dot(x[i], x[i])
    else:
        np.einsum("ij,ij->i", x, x, out=out)


def row_asums(x, out):
    """out[i] = sum |x[i]| (cblas_sasum; NumPy has no asum, so the order may differ)."""
    np.sum(np.abs(x), axis=1, out=out)


def row_gemv(x, ones, alpha, out):
    """out = alpha * (x @ ones): Caffe's caffe_cpu_gemv(NoTrans, num, dim, alpha, x, ones, 0).

    NumPy's matmul of a matrix by a vector is the same cblas_sgemv call; beta = 0 makes
    OpenBLAS zero y and add alpha * dot, a single rounding of the product.
    """
    np.matmul(x, ones, out=out)
    if alpha != 1:
        out *= out.dtype.type(alpha)


def sign(x, out):
    """Caffe's caffe_cpu_sign: (0 < x) - (x < 0), so NaN maps to 0."""
    np.greater(x, 0, out=out)
    out -= x < 0
