"""Per-channel reductions over an (outer, channels, inner) view, in Caffe's gemv order.

Caffe sums such blobs with two matrix-vector products against vectors of ones: first each
(outer, channel) row over `inner`, then the row sums over `outer`. These kernels keep that
order, in the data type, one channel per task:
  channel_sum(x, alpha, out):    out[c] = sum_o alpha * sum_i x[o, c, i]
  channel_dot(a, b, alpha, out): out[c] = sum_o alpha * sum_i a[o, c, i] * b[o, c, i]
Used by BatchNorm, Scale and Bias.
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def channel_sum(x, alpha, out):
    n_outer, channels, inner = x.shape
    zero = x.dtype.type(0)
    for c in prange(channels):
        total = zero
        for o in range(n_outer):
            row = zero
            for i in range(inner):
                row += x[o, c, i]
            total += alpha * row
        out[c] = total


@njit(cache=True, parallel=True)
def channel_dot(a, b, alpha, out):
    n_outer, channels, inner = a.shape
    zero = a.dtype.type(0)
    for c in prange(channels):
        total = zero
        for o in range(n_outer):
            row = zero
            for i in range(inner):
                row += a[o, c, i] * b[o, c, i]
            total += alpha * row
        out[c] = total
