"""Sparse weight products (SSL's conv_mode kernels): pure functions over arrays.

    CSR         A (M, K) as indptr (M+1,) int64, indices (nnz,) int32, data (nnz,): row i's
                non-zeros are data[indptr[i]:indptr[i+1]] at columns indices[...], ascending
    csr_matmul  C (M, N) = A_csr @ B, B row-major (K, N)
    Compacted   A's non-all-zero rows and columns (those worth dropping), and the dense
                A[rows][:, cols]
    ccnmm       C = A @ B as compacted @ B[cols], scattered into C's rows (zero rows: C = 0)
    direct_conv y = conv(x, w) + bias with w's non-zeros as a CSR over its (M, C/g*kh*kw)
                view: each (c, kh, kw, value) adds value * a shifted input plane to the output
                plane (Park et al., "Holistic SparseCNN"); with every entry listed (zeros too)
                it is a direct dense convolution

Why the CSR product is shaped this way (ANCHORS.md: off-the-shelf CSR loses to dense BLAS below
about 95% sparsity): a naive row-by-row kernel streams every referenced row of B from memory
for each row of A. Here N is cut into tiles (TILE) and, tile by tile, every row of A is run
against the same (K, tile) slab of B, which stays in cache, so B comes from memory once; a
row's non-zeros are taken four at a time, so each load and store of C's tile (in L1) serves
four multiply-adds, and the inner loop over the tile is contiguous and vectorized (FMA).

Threads: kernels are single-threaded, nogil, and split over caffe-lite's threads
(threads.run_parallel) by rows balanced on non-zeros, not with Numba's parallel=True (which
would enter Numba's threading layer from kernels/gemm.py's worker threads, where convolution
products run: see neuron.split_range). Inside a worker the split runs inline.

Kernels are dtype-generic (float32, float64). Sums are ordered differently from BLAS, so
results match a dense product to rounding: |error| <= (K + 2) eps * (|A| @ |B|).
"""
from typing import NamedTuple

import numpy as np
from numba import njit, uint64 as U

from .. import threads
from .gemm import SPLIT_MIN_MACS

#: columns of B and C per tile: the tile of C's row (4 KiB in float32) stays in L1 while the
#: row's non-zeros stream their pieces of B, and the (K, TILE) slab of B stays in L2/L3 for the
#: next rows. Measured on lowered AlexNet/cifar shapes (one core, 70-95% sparsity): 1024 beat
#: 256 and 512 by 5-30%, and copying the slab into a packed buffer gained nothing.
TILE = 1024


class CSR(NamedTuple):
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple

    @property
    def nnz(self):
        return int(self.indptr[-1])


def csr_from_dense(a, keep_zeros=False):
    """CSR of a 2-d array; with keep_zeros every entry is listed (a dense 'sparse' matrix)."""
    a = np.ascontiguousarray(a)
    m, k = a.shape
    if keep_zeros:
        return CSR(np.arange(m + 1, dtype=np.int64) * k,
                   np.tile(np.arange(k, dtype=np.int32), m), a.reshape(-1), (m, k))
    mask = a != 0
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    rows, cols = np.nonzero(mask)
    return CSR(indptr, cols.astype(np.int32), a[rows, cols], (m, k))


def csr_to_dense(a):
    out = np.zeros(a.shape, a.data.dtype)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    out[rows, a.indices] = a.data
    return out


@njit(cache=True, nogil=True, fastmath={"contract"})
def _csr_rows(indptr, indices, data, b, c, tile, lo, hi):
    """c[lo:hi] = A[lo:hi] @ b, tile by tile of b's columns (see the module docstring)."""
    n = b.shape[1]
    bf = b.reshape(-1)
    cf = c.reshape(-1)
    zero = c.dtype.type(0)
    for j0 in range(0, n, tile):
        w = min(tile, n - j0)
        for i in range(lo, hi):
            ci = U(i * n + j0)
            for t in range(w):
                cf[ci + U(t)] = zero
            e = indptr[i]
            e1 = indptr[i + 1]
            # four non-zeros per pass: one load and store of c's tile serves four of them
            while e + 4 <= e1:
                v0, v1, v2, v3 = data[e], data[e + 1], data[e + 2], data[e + 3]
                b0 = U(indices[e] * n + j0)
                b1 = U(indices[e + 1] * n + j0)
                b2 = U(indices[e + 2] * n + j0)
                b3 = U(indices[e + 3] * n + j0)
                for t in range(w):
                    cf[ci + U(t)] += (v0 * bf[b0 + U(t)] + v1 * bf[b1 + U(t)]
                                      + v2 * bf[b2 + U(t)] + v3 * bf[b3 + U(t)])
                e += 4
            while e < e1:
                v = data[e]
                b0 = U(indices[e] * n + j0)
                for t in range(w):
                    cf[ci + U(t)] += v * bf[b0 + U(t)]
                e += 1


def _balanced(cost_cumsum, parts):
    """Bounds splitting [0, len) into `parts` ranges of about equal cost (cumsum from 0)."""
    total = cost_cumsum[-1]
    cuts = np.searchsorted(cost_cumsum, total * np.arange(1, parts) / parts)
    return [0] + [int(c) for c in cuts] + [len(cost_cumsum) - 1]


def _split(kernel, args, cost_cumsum, work):
    """kernel(*args, lo, hi) over rows, on caffe-lite's threads when `work` pays for it."""
    rows = len(cost_cumsum) - 1
    parts = min(threads.get_num_threads(), rows)
    if work < SPLIT_MIN_MACS or parts < 2:
        kernel(*args, 0, rows)
        return
    bounds = _balanced(cost_cumsum, parts)
    threads.run_parallel(kernel, [(*args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])
                                  if hi > lo])


def csr_matmul(a, b, out):
    """out (M, N) = a (CSR, M x K) @ b (K, N), b and out C-contiguous."""
    m, k = a.shape
    if b.shape[0] != k or out.shape != (m, b.shape[1]):
        raise ValueError(f"csr_matmul: {a.shape} @ {b.shape} -> {out.shape}")
    n = b.shape[1]
    # each row costs its non-zeros plus the zeroing of its output row
    cost = a.indptr + np.arange(m + 1)
    _split(_csr_rows, (a.indptr, a.indices, a.data, b, out, TILE), cost, (a.nnz + m) * n)
    return out


def inner_product_csr(x, w_csr, bias=None):
    """y (B, N) = x (B, K) @ W^T + bias, W (N, K) given as CSR (InnerProduct's weight; with
    `transpose: true` pass the CSR of the stored (K, N) weight's transpose).

    Computed as (W @ x^T)^T, so the sparse operand is on the left and the batch is the
    tiled, contiguous dimension."""
    n, k = w_csr.shape
    xt = np.ascontiguousarray(x.reshape(-1, k).T)
    yt = np.empty((n, xt.shape[1]), xt.dtype)
    csr_matmul(w_csr, xt, yt)
    y = np.ascontiguousarray(yt.T)
    if bias is not None:
        y += bias
    return y


# --- CCNMM ----------------------------------------------------------------------------------

class Compacted(NamedTuple):
    rows: np.ndarray          # indices of the rows with a non-zero
    cols: np.ndarray          # indices of the columns with a non-zero
    w: np.ndarray             # (len(rows), len(cols)) dense
    shape: tuple


#: a gathered (or scattered) element costs about as much as this many multiply-adds of the
#: GEMM (measured 19-26 with one thread on lowered cifar/AlexNet shapes), so dropping a few
#: all-zero columns of a short matrix would cost more than it saves
GATHER_MACS = 24


def compact(a, gather_macs=GATHER_MACS):
    """A's non-all-zero rows and columns and the compacted dense matrix.

    All-zero columns (rows) are kept when dropping them saves fewer multiply-adds than
    `gather_macs` times the elements moved to drop them; gather_macs=0 drops all of them."""
    a = np.asarray(a)
    m, k = a.shape
    mask = a != 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if (k - len(cols)) * len(rows) < gather_macs * len(cols):
        cols = np.arange(k)
    if (m - len(rows)) * len(cols) < gather_macs * len(rows):
        rows = np.arange(m)
    return Compacted(rows, cols, np.ascontiguousarray(a[np.ix_(rows, cols)]), a.shape)


def ccnmm(a, b, out, scratch=None):
    """out (M, N) = A @ b (K, N) for A given as `compact(A)`: one dense GEMM of the compacted
    matrix with b's rows at its columns; the other rows of out are 0.

    `scratch(name, shape, dtype)` hands out buffers for the gathered b and the product
    (kernels/gemm.py's Workspace.get); without it they are allocated."""
    get = scratch or (lambda name, shape, dtype: np.empty(shape, dtype))
    m, k = a.shape
    if b.shape[0] != k or out.shape != (m, b.shape[1]):
        raise ValueError(f"ccnmm: {a.shape} @ {b.shape} -> {out.shape}")
    all_rows, all_cols = len(a.rows) == m, len(a.cols) == k
    if not all_rows:
        out[...] = 0
    if len(a.rows) == 0:
        return out
    if not all_cols:
        b = np.take(b, a.cols, axis=0, out=get("ccnmm_b", (len(a.cols), b.shape[1]), b.dtype))
    if all_rows:
        np.matmul(a.w, b, out=out)
    else:
        part = get("ccnmm_out", (len(a.rows), b.shape[1]), out.dtype)
        np.matmul(a.w, b, out=part)
        out[a.rows] = part
    return out


# --- direct convolution ---------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"})
def _direct_planes(x, indptr, indices, data, bias, kh, kw, ph, pw, sh, sw, dh, dw, group,
                   y, lo, hi):
    """y[n, m] for t = n * M + m in [lo, hi), on zero-padded input planes read flat.

    A padded plane has rows of wp elements (wp a multiple of sw), and the output plane is
    computed on a virtual row of owv = sh * wp / sw elements, so that output q = oy * owv + ox
    reads input q * sw + (i * dh * wp + j * dw) for kernel offset (i, j): each listed weight is
    ONE long contiguous (stride 1) loop over the whole output plane instead of oh short ones.
    The virtual columns ox >= ow read past a row's end (into the padding or the next row) and
    are dropped. Bias is added after the sum, as Caffe does."""
    _, channels, height, width = x.shape
    m_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    cg = channels // group
    mg = m_out // group
    kk = kh * kw
    wp = width + 2 * pw
    wp += (sw - wp % sw) % sw
    owv = sh * wp // sw
    span = oh * owv
    plane = max((span - 1) * sw + (kh - 1) * dh * wp + (kw - 1) * dw + 1, (ph + height) * wp)
    xpad = np.zeros(cg * plane, x.dtype)
    acc = np.empty(span, y.dtype)
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    zero = y.dtype.type(0)
    padded = -1
    for t in range(lo, hi):
        n = t // m_out
        m = t - n * m_out
        if n * group + m // mg != padded:      # consecutive t share their image and group
            padded = n * group + m // mg
            for c in range(cg):
                for r in range(height):
                    src = U(((n * channels + (m // mg) * cg + c) * height + r) * width)
                    dst = U(c * plane + (r + ph) * wp + pw)
                    for q in range(width):
                        xpad[dst + U(q)] = xf[src + U(q)]
        for q in range(span):
            acc[q] = zero
        e = indptr[m]
        e1 = indptr[m + 1]
        if sw == 1:     # four weights per pass: one load and store of acc serves four
            while e + 4 <= e1:
                o0 = U(_offset(indices[e], kk, kw, plane, wp, dh, dw))
                o1 = U(_offset(indices[e + 1], kk, kw, plane, wp, dh, dw))
                o2 = U(_offset(indices[e + 2], kk, kw, plane, wp, dh, dw))
                o3 = U(_offset(indices[e + 3], kk, kw, plane, wp, dh, dw))
                v0, v1, v2, v3 = data[e], data[e + 1], data[e + 2], data[e + 3]
                for q in range(span):
                    acc[q] += (v0 * xpad[o0 + U(q)] + v1 * xpad[o1 + U(q)]
                               + v2 * xpad[o2 + U(q)] + v3 * xpad[o3 + U(q)])
                e += 4
        while e < e1:
            o0 = U(_offset(indices[e], kk, kw, plane, wp, dh, dw))
            v0 = data[e]
            for q in range(span):
                acc[q] += v0 * xpad[o0 + U(q * sw)]
            e += 1
        b = bias[m] if bias.shape[0] else zero
        out0 = U(t * oh * ow)
        for oy in range(oh):
            for ox in range(ow):
                yf[out0 + U(oy * ow + ox)] = acc[oy * owv + ox] + b


@njit(cache=True, inline="always")
def _offset(col, kk, kw, plane, wp, dh, dw):
    """Flat offset in the padded planes of weight column col = (c * kh + i) * kw + j."""
    c = col // kk
    i = (col - c * kk) // kw
    return c * plane + i * dh * wp + (col - c * kk - i * kw) * dw


def direct_conv(x, w_csr, bias, geo, y):
    """y (N, M, OH, OW) = conv(x (N, C, H, W), w) + bias, with w's (M, C/g*kh*kw) view as
    CSR (`csr_from_dense(w.reshape(M, -1))`; keep_zeros=True for the dense convolution).
    Split over (image, output channel) pairs, balanced on the listed weights."""
    n, m = y.shape[:2]
    bias = np.empty(0, y.dtype) if bias is None else np.ascontiguousarray(bias, y.dtype)
    per_channel = np.diff(w_csr.indptr) + 1
    cost = np.zeros(n * m + 1, np.int64)
    np.cumsum(np.tile(per_channel, n), out=cost[1:])
    args = (np.ascontiguousarray(x), w_csr.indptr, w_csr.indices, w_csr.data, bias,
            geo.kernel_h, geo.kernel_w, geo.pad_h, geo.pad_w, geo.stride_h, geo.stride_w,
            geo.dilation_h, geo.dilation_w, geo.group, y)
    _split(_direct_planes, args, cost, int(cost[-1]) * y.shape[2] * y.shape[3])
    return y
