"""Sparse weight products (SSL's conv_mode kernels): pure functions over arrays.

    CSR         A (M, K) as indptr (M+1,) int64, indices (nnz,) int32, data (nnz,): row i's
                non-zeros are data[indptr[i]:indptr[i+1]] at columns indices[...], ascending
    csr_matmul  C (M, N) = A_csr @ B, B row-major (K, N)
    Compacted   A's non-all-zero rows and columns (those worth dropping), and the dense
                A[rows][:, cols]
    ccnmm       C = A @ B as compacted @ B[cols], scattered into C's rows (zero rows: C = 0)

The direct sparse convolution (DIRECT_SCONV) is in kernels/direct_conv.py.

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
from numba import uint64 as U

from .. import threads
from .jit import kernel

#: sparse products of fewer multiply-adds run on the calling thread; lower than dense
#: GEMM's threshold (kernels/gemm.py), as a sparse multiply-add costs several dense ones
SPLIT_MIN_MACS = 1 << 20

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


@kernel(nogil=True, fastmath={"contract"})
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


@kernel(nogil=True, fastmath={"contract"})
def _csr_matvec(indptr, indices, data, b, c, lo, hi):
    """c[lo:hi, 0] = A[lo:hi] @ b[:, 0]: a batch of one (an InnerProduct deployed on single
    images), where the tiled kernel would run loops of one element. Four partial sums keep
    four multiply-adds in flight; the weights stream from memory once, as a dense matvec's
    do, but only their non-zeros."""
    bf = b.reshape(-1)
    cf = c.reshape(-1)
    zero = c.dtype.type(0)
    for i in range(lo, hi):
        s0 = s1 = s2 = s3 = zero
        e = indptr[i]
        e1 = indptr[i + 1]
        while e + 4 <= e1:
            s0 += data[e] * bf[U(indices[e])]
            s1 += data[e + 1] * bf[U(indices[e + 1])]
            s2 += data[e + 2] * bf[U(indices[e + 2])]
            s3 += data[e + 3] * bf[U(indices[e + 3])]
            e += 4
        while e < e1:
            s0 += data[e] * bf[U(indices[e])]
            e += 1
        cf[i] = (s0 + s1) + (s2 + s3)


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
    if n == 1:
        _split(_csr_matvec, (a.indptr, a.indices, a.data, b, out), cost, a.nnz + m)
    else:
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


def compact(a, gather_macs=GATHER_MACS, column_gather_macs=None):
    """A's non-all-zero rows and columns and the compacted dense matrix.

    All-zero columns (rows) are kept when dropping them saves fewer multiply-adds than
    `gather_macs` times the elements moved to drop them; gather_macs=0 drops all of them.
    `column_gather_macs`, when given, is the columns' own price (0 where the product's
    operand is made for the kept columns only, as LOWERED_CCNMM's lowering is)."""
    col_price = gather_macs if column_gather_macs is None else column_gather_macs
    a = np.asarray(a)
    m, k = a.shape
    mask = a != 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if (k - len(cols)) * len(rows) < col_price * len(cols):
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
