"""Direct sparse convolution (SSL's DIRECT_SCONV; with every weight listed, DIRECT_DCONV):
y = conv(x, w) + bias without lowering, after Park et al., "Holistic SparseCNN".

Each output plane (image n, output channel m) is the sum, over its filter's non-zeros
(c, ki, kj, value), of value times the input plane c shifted by the tap (ki, kj). Those sums
read the input only, which stays in cache (CaffeNet conv3's padded input is 230 KB against
the 1.5 MB its lowered copy would take), and cost one multiply-add per non-zero and output.

The loop over outputs is made one long stride-1 loop for every tap, whatever the stride, so
that it vectorizes and sixteen non-zeros share each load and store of the accumulator:
- the padded input is split into stride phases: phase (py, px) holds the padded pixels
  (r * sh + py, q * sw + px) at (r, q), in rows of `ws` = ceil(padded width / sw) elements;
- tap (ki, kj) reads phase ((ki*dh) % sh, (kj*dw) % sw) shifted by ((ki*dh) // sh,
  (kj*dw) // sw) rows and columns, so output (oy, ox) is at oy * ws + ox for every tap;
- the output plane is computed on virtual rows of ws >= OW elements, rounded up to whole
  vectors (_ROUND); the virtual columns ox >= OW and the rounding read the next row or the
  zero tail and are dropped.
The weights are a CSR over w's (M, C/g*kh*kw) view (kernels/sparse.py's, built once per
weight); each column's offset in the padded phases is a table lookup (`_phases`, per call:
C/g*kh*kw entries, in L1), so the inner loops do no division.

Threads: split over (image, output channel) pairs balanced on listed weights, as
kernels/sparse.py splits its products; each worker pads the (image, group) it is on.
Sums run over a filter's non-zeros in (c, ki, kj) order, one FMA each, then the bias is
added (Caffe's order of the bias), so results match the dense convolution to rounding.

`DirectConv` is one layer's convolution: it keeps its weight's CSR, the layout and each
worker's padded-input and accumulator buffers between calls. A fresh buffer per worker and
call (200 KB on CaffeNet conv3) paid its page faults every time; a kept one's padding stays
the zeros it was made with, since only image pixels are ever written.

The weight changes in place (the solver's update, pycaffe-style assignment, a gradient check)
and Blob keeps no version, so each call checks that the weight still has the CSR's non-zeros:
per row, the listed entries bit for bit and the count of non-zeros. That is exact (NaN and
-0.0 included: -0.0 is a zero here as in the CSR's build), reads the weight once, and runs in
the workers, each checking an output channel's row just before computing its plane. A worker
that finds a change returns at once; the CSR is rebuilt and the call runs again. (Comparing
with a private copy instead read twice the bytes on the calling thread: 0.24 ms of CaffeNet
conv3's 0.9 ms at 90% sparsity.)
"""
from typing import NamedTuple

import numpy as np
from numba import njit, uint64 as U

from .. import threads
from .sparse import SPLIT_MIN_MACS, _balanced, csr_from_dense

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


class _Phases(NamedTuple):
    """Layout of one (image, group)'s padded input split into stride phases."""
    rows: int                 # rows per phase plane (the last ones only ever read as zeros)
    cols: int                 # ws: elements per row, also the output's virtual row
    plane: int                # elements per input channel: sh * sw phase planes
    table: np.ndarray         # (C/g*kh*kw,) int64: each weight column's offset


def _phases(geo, channels, height, width, out_h):
    """_Phases of an (H, W) image whose groups have `channels` channels."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dilation_h, geo.dilation_w
    ki = np.arange(geo.kernel_h) * dh
    kj = np.arange(geo.kernel_w) * dw
    cols = -(-(width + 2 * geo.pad_w) // sw)
    # rows oy + ki*dh // sh are read for oy < OH; one more for the virtual columns' overrun
    rows = out_h + int(ki[-1]) // sh + 1
    phase = (ki[:, None] % sh) * sw + kj[None, :] % sw
    taps = (phase * rows + (ki[:, None] // sh)) * cols + kj[None, :] // sw
    plane = sh * sw * rows * cols
    table = np.add.outer(np.arange(channels, dtype=np.int64) * plane, taps.reshape(-1))
    return _Phases(rows, cols, plane, table.reshape(-1))


@njit(cache=True, nogil=True)
def _pad_phases(x, n, c0, cg, ph, pw, sh, sw, rows, cols, plane, xpad):
    """xpad = channels [c0, c0 + cg) of image n, zero-padded, split into stride phases.
    Only the image's pixels are written: the padding stays the zeros xpad was made with."""
    _, _, height, width = x.shape
    xf = x.reshape(-1)
    for c in range(cg):
        for r in range(height):
            rr = r + ph
            sub_row = rr // sh
            if sub_row >= rows:
                continue
            src = U(((n * x.shape[1] + c0 + c) * height + r) * width)
            for px in range(sw):
                q0 = (px - pw) % sw             # first image column of this column phase
                if q0 >= width:
                    continue
                dst = U(c * plane + ((rr % sh * sw + px) * rows + sub_row) * cols
                        + (q0 + pw) // sw)
                count = (width - q0 + sw - 1) // sw
                if sw == 1:
                    for k in range(count):
                        xpad[dst + U(k)] = xf[src + U(q0 + k)]
                else:
                    for k in range(count):
                        xpad[dst + U(k)] = xf[src + U(q0 + k * sw)]


@njit(cache=True, nogil=True)
def _rows_unchanged(wf, wb, indptr, indices, data_bits, listed_nonzeros, m0, m1):
    """Rows [m0, m1) of the weight (M, K), as values wf and bits wb, still have the CSR's
    entries: the listed ones bit for bit and no other non-zero (module docstring). The
    loops have no exit, so they vectorize; the listed entries are read while the row is
    still in L1."""
    k = wf.shape[1]
    flat = wf.reshape(-1)
    bits = wb.reshape(-1)
    for m in range(m0, m1):
        row = U(m * k)
        count = 0
        for j in range(k):
            count += np.int32(flat[row + U(j)] != 0)
        diff = bits[0] ^ bits[0]
        for e in range(indptr[m], indptr[m + 1]):
            diff |= bits[row + U(indices[e])] ^ data_bits[e]
        if count != listed_nonzeros[m] or diff != 0:
            return False
    return True


#: the accumulated span is rounded up to a multiple of this many elements (the rest is
#: dropped, as the virtual columns are): LLVM's vector loop then has no scalar remainder,
#: which cost CaffeNet conv3-conv5 (195 outputs per plane) 30-50% of their time
_ROUND = 16


@njit(cache=True, nogil=True, fastmath={"contract"})
def _direct_planes(wf, wb, data_bits, listed_nonzeros, check, x, indptr, indices, data, bias,
                   table, ph, pw, sh, sw, rows, cols, plane, group, y, xpad, acc, lo, hi):
    """y[n, m] for t = n * M + m in [lo, hi) (module docstring), on this worker's padded
    input xpad (`_scratch`: its padding zero) and accumulator acc. With `check`, each output
    channel's weight row is checked (`_rows_unchanged`) the first time the range reaches it,
    just before its plane is computed, so that its reads overlap the computing; False at
    the first change, the rest left undone."""
    channels = x.shape[1]
    m_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    cg = channels // group
    mg = m_out // group
    span = acc.shape[0]
    yf = y.reshape(-1)
    zero = y.dtype.type(0)
    padded = -1
    for t in range(lo, hi):
        n = t // m_out
        m = t - n * m_out
        if check and t - lo < m_out and not _rows_unchanged(
                wf, wb, indptr, indices, data_bits, listed_nonzeros, m, m + 1):
            return False
        if n * group + m // mg != padded:      # consecutive t share their image and group
            padded = n * group + m // mg
            _pad_phases(x, n, (m // mg) * cg, cg, ph, pw, sh, sw, rows, cols, plane, xpad)
        for q in range(span):
            acc[q] = zero
        e = indptr[m]
        e1 = indptr[m + 1]
        # one load and store of acc serves sixteen weights, then four, then one; each
        # pass sums its weights in order onto acc (one FMA each). Written out, not looped:
        # a loop over a pass's weights puts them and their offsets back in memory, and the
        # four-weight pass keeps the remainder from running up to fifteen one-weight passes
        # (16 and 4 measured 10% faster than 8 alone on CaffeNet conv3-conv5)
        while e + 16 <= e1:
            o0, o1 = U(table[indices[e + 0]]), U(table[indices[e + 1]])
            o2, o3 = U(table[indices[e + 2]]), U(table[indices[e + 3]])
            o4, o5 = U(table[indices[e + 4]]), U(table[indices[e + 5]])
            o6, o7 = U(table[indices[e + 6]]), U(table[indices[e + 7]])
            o8, o9 = U(table[indices[e + 8]]), U(table[indices[e + 9]])
            o10, o11 = U(table[indices[e + 10]]), U(table[indices[e + 11]])
            o12, o13 = U(table[indices[e + 12]]), U(table[indices[e + 13]])
            o14, o15 = U(table[indices[e + 14]]), U(table[indices[e + 15]])
            v0, v1, v2, v3 = data[e + 0], data[e + 1], data[e + 2], data[e + 3]
            v4, v5, v6, v7 = data[e + 4], data[e + 5], data[e + 6], data[e + 7]
            v8, v9, v10, v11 = data[e + 8], data[e + 9], data[e + 10], data[e + 11]
            v12, v13, v14, v15 = data[e + 12], data[e + 13], data[e + 14], data[e + 15]
            for q in range(span):
                s = acc[q]
                s += v0 * xpad[o0 + U(q)]
                s += v1 * xpad[o1 + U(q)]
                s += v2 * xpad[o2 + U(q)]
                s += v3 * xpad[o3 + U(q)]
                s += v4 * xpad[o4 + U(q)]
                s += v5 * xpad[o5 + U(q)]
                s += v6 * xpad[o6 + U(q)]
                s += v7 * xpad[o7 + U(q)]
                s += v8 * xpad[o8 + U(q)]
                s += v9 * xpad[o9 + U(q)]
                s += v10 * xpad[o10 + U(q)]
                s += v11 * xpad[o11 + U(q)]
                s += v12 * xpad[o12 + U(q)]
                s += v13 * xpad[o13 + U(q)]
                s += v14 * xpad[o14 + U(q)]
                s += v15 * xpad[o15 + U(q)]
                acc[q] = s
            e += 16
        while e + 4 <= e1:
            o0, o1 = U(table[indices[e]]), U(table[indices[e + 1]])
            o2, o3 = U(table[indices[e + 2]]), U(table[indices[e + 3]])
            v0, v1, v2, v3 = data[e], data[e + 1], data[e + 2], data[e + 3]
            for q in range(span):
                s = acc[q]
                s += v0 * xpad[o0 + U(q)]
                s += v1 * xpad[o1 + U(q)]
                s += v2 * xpad[o2 + U(q)]
                s += v3 * xpad[o3 + U(q)]
                acc[q] = s
            e += 4
        while e < e1:
            o0 = U(table[indices[e]])
            v0 = data[e]
            for q in range(span):
                acc[q] += v0 * xpad[o0 + U(q)]
            e += 1
        b = bias[m] if bias.shape[0] else zero
        out0 = U(t * oh * ow)
        for oy in range(oh):
            for ox in range(ow):
                yf[out0 + U(oy * ow + ox)] = acc[oy * cols + ox] + b
    return True


class _Weights(NamedTuple):
    """A weight's CSR over its (M, C/g*kh*kw) view, with what the check reads."""
    csr: object
    data_bits: np.ndarray
    listed_nonzeros: np.ndarray     # per row: the listed entries that are non-zero
    cost: np.ndarray                # per row: listed entries + 1 (the bias pass)


def _weights(w2, keep_zeros):
    # keep_zeros lists a view of w2: the copy is what makes it the weight *as it was*
    csr = csr_from_dense(np.array(w2) if keep_zeros else w2, keep_zeros)
    # the listed non-zeros are the row's non-zeros (as `a != 0` counts: NaN yes, -0.0 no)
    listed = np.count_nonzero(w2, axis=1).astype(np.int64)
    return _Weights(csr, csr.data.view(_UINT[csr.data.itemsize]), listed,
                    np.diff(csr.indptr) + 1)


def _ranges(cost_per_row, images, outputs, thread_count):
    """The workers' ranges of t = n * M + m, balanced on listed weights (each row's cost)."""
    m = len(cost_per_row)
    cost = np.zeros(images * m + 1, np.int64)
    np.cumsum(np.tile(cost_per_row, images), out=cost[1:])
    parts = min(thread_count, images * m)
    if int(cost[-1]) * outputs < SPLIT_MIN_MACS or parts < 2:
        return [(0, images * m)]
    bounds = _balanced(cost, parts)
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


class DirectConv:
    """One layer's direct convolution, y = conv(x, w) + bias: the weight's CSR, rebuilt when
    the weight changes, the layout and the workers' buffers, kept between calls (module
    docstring). keep_zeros lists every weight: the direct dense convolution."""

    def __init__(self, keep_zeros=False):
        self.keep_zeros = keep_zeros
        self._weights = None
        self._layout_key = None
        self._layout = None
        self._scratch = []
        self._ranges_for = self._ranges_key = self._ranges = None

    def invalidate(self):
        self._weights = None

    def forward(self, x, w, bias, geo, y):
        w2 = np.ascontiguousarray(w).reshape(w.shape[0], -1)
        x = np.ascontiguousarray(x)
        bias = np.empty(0, y.dtype) if bias is None else np.ascontiguousarray(bias, y.dtype)
        weights = self._weights
        fresh = (weights is None or weights.csr.shape != w2.shape
                 or weights.csr.data.dtype != w2.dtype)
        if fresh:
            weights = self._weights = _weights(w2, self.keep_zeros)
        if not self._run(x, w2, weights, bias, geo, y, check=not fresh):
            self._weights = _weights(w2, self.keep_zeros)
            self._run(x, w2, self._weights, bias, geo, y, check=False)
        return y

    def _run(self, x, w2, weights, bias, geo, y, check):
        n, m, oh, ow = y.shape
        layout = self._layout_for(x, geo, oh, y.dtype)
        key = (n, oh * ow, threads.get_num_threads())
        if self._ranges_for is not weights or key != self._ranges_key:
            self._ranges_for, self._ranges_key = weights, key
            self._ranges = _ranges(weights.cost, *key)
        csr = weights.csr
        args = (w2, w2.view(weights.data_bits.dtype), weights.data_bits, weights.listed_nonzeros,
                check, x, csr.indptr, csr.indices, csr.data, bias, layout.table, geo.pad_h,
                geo.pad_w, geo.stride_h, geo.stride_w, layout.rows, layout.cols, layout.plane,
                geo.group, y)
        calls = [(*args, *self._buffers(i, layout, x, geo, oh, y.dtype), lo, hi)
                 for i, (lo, hi) in enumerate(self._ranges)]
        return all(threads.run_parallel(_direct_planes, calls))

    def _layout_for(self, x, geo, oh, dtype):
        key = (x.shape[1:], geo, oh, dtype)
        if key != self._layout_key:
            self._layout_key = key
            self._layout = _phases(geo, x.shape[1] // geo.group, x.shape[2], x.shape[3], oh)
            self._scratch = []              # another layout: other padding positions
        return self._layout

    def _buffers(self, worker, layout, x, geo, oh, dtype):
        """Worker `worker`'s (padded input, accumulator), made zero for this layout."""
        while len(self._scratch) <= worker:
            span = -(-oh * layout.cols // _ROUND) * _ROUND
            self._scratch.append((np.zeros(x.shape[1] // geo.group * layout.plane + _ROUND,
                                           dtype), np.empty(span, dtype)))
        return self._scratch[worker]

