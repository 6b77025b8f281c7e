"""Direct sparse convolution (SSL's DIRECT_SCONV; with every weight listed, DIRECT_DCONV):
y = conv(x, w) + bias without lowering, after Park et al., "Holistic SparseCNN".

Each output plane (image n, output channel m) is the sum, over its filter's non-zeros
(c, ki, kj, value), of value times the input plane c shifted by the tap (ki, kj). Those sums
read the input only, which stays in cache (CaffeNet conv3's padded input is 230 KB against
the 1.5 MB its lowered copy would take), and cost one multiply-add per non-zero and output.

The loop over outputs is made one long stride-1 loop for every tap, whatever the stride, so
that it runs on whole vectors:
- the padded input is split into stride phases: phase (py, px) holds the padded pixels
  (r * sh + py, q * sw + px) at (r, q), in rows of `ws` = ceil(padded width / sw) elements;
- tap (ki, kj) reads phase ((ki*dh) % sh, (kj*dw) % sw) shifted by ((ki*dh) // sh,
  (kj*dw) // sw) rows and columns, so output (oy, ox) is at oy * ws + ox for every tap;
- the output plane is computed on virtual rows of ws >= OW elements, rounded up to whole
  vectors (_ROUND); the virtual columns ox >= OW and the rounding read the next row or the
  zero tail and are dropped.
The weights are a CSR over w's (M, C/g*kh*kw) view (kernels/sparse.py's, built once per
weight); each listed weight's offset in the padded phases is looked up once per weight and
layout (`_phases`' table), so the inner loops do no division.

The inner loop is a tile in LLVM IR (kernels/vector_tile.py, one row): up to 16 vectors of
a plane's accumulators held in registers, each listed weight broadcast once and multiplied
into all of them (one independent FMA chain per vector). The planes of an (image, group) are
summed together, block of input channels by block (L1_INPUT_BYTES of padded input each), so
the input a block reads stays in L1 while every plane takes its weights there; the
accumulators, a plane's span each, go to memory between blocks. Against sixteen weights
per Numba loop over the plane (8-float vectors, the whole padded input read from L2 for
every plane), CaffeNet conv3 at 90% at batch 1 went from 0.84 to 0.50 ms.

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
from numba import types, uint64 as U
from numba.extending import overload

from .. import threads
from .jit import kernel
from .sparse import SPLIT_MIN_MACS, _balanced, csr_from_dense
from .vector_tile import LANES, PLANE_MAX_VECTORS, PLANE_TILES

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
# the plane tiles by vector count, as globals Numba can call (a tuple's item cannot be)
(_T1, _T2, _T3, _T4, _T5, _T6, _T7, _T8, _T9, _T10, _T11, _T12, _T13, _T14, _T15,
 _T16) = PLANE_TILES[1:]


class _Phases(NamedTuple):
    """Layout of one (image, group)'s padded input split into stride phases."""
    rows: int                 # rows per phase plane (the last ones only ever read as zeros)
    cols: int                 # ws: elements per row, also the output's virtual row
    plane: int                # elements per input channel: sh * sw phase planes
    table: np.ndarray         # (C/g*kh*kw,) int64: each weight column's offset
    pix: np.ndarray           # int64: each vector's start in the output plane's span


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
    span = -(-out_h * cols // _ROUND) * _ROUND
    return _Phases(rows, cols, plane, table.reshape(-1),
                   np.arange(0, span, LANES, dtype=np.int64))


@kernel(nogil=True)
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


@kernel(nogil=True)
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
_ROUND = LANES
#: a channel block's padded input: half of a 48 KB L1 data cache (the other half holds the
#: weights, offsets and the accumulators' traffic)
L1_INPUT_BYTES = 24 << 10


def _plane_sums(xpad, pix, data, offsets, e0, e1, acc, v0, v1):
    """acc[q] += data[e] * xpad[offsets[e] + q] for e in [e0, e1) in order, one FMA each,
    for q in vectors [v0, v1) of the span (e1 > e0)."""


@overload(_plane_sums, jit_options={"fastmath": {"contract"}})
def _plane_sums_impl(xpad, pix, data, offsets, e0, e1, acc, v0, v1):
    if xpad.dtype != types.float32:
        def loops(xpad, pix, data, offsets, e0, e1, acc, v0, v1):
            for e in range(e0, e1):
                o, v = offsets[e], data[e]
                for q in range(v0 * LANES, v1 * LANES):
                    acc[q] += v * xpad[o + q]
        return loops

    def tiles(xpad, pix, data, offsets, e0, e1, acc, v0, v1):
        # [v0, v1) in as few tiles of at most PLANE_MAX_VECTORS vectors as it takes, of
        # equal size (kernels/vector_tile.py): each vector's chain is independent, and one
        # broadcast of a weight serves the tile's vectors
        vectors = v1 - v0
        chunks = -(-vectors // PLANE_MAX_VECTORS)
        t = v0
        for k in range(chunks):
            v = (v1 - t) // (chunks - k)
            if v == 1:
                _T1(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 2:
                _T2(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 3:
                _T3(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 4:
                _T4(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 5:
                _T5(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 6:
                _T6(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 7:
                _T7(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 8:
                _T8(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 9:
                _T9(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 10:
                _T10(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 11:
                _T11(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 12:
                _T12(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 13:
                _T13(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 14:
                _T14(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 15:
                _T15(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            elif v == 16:
                _T16(xpad, 0, pix, t, data, 0, offsets, e0, e1, acc, t * LANES, 0, 0, 1)
            t += v
    return tiles


@kernel(nogil=True, fastmath={"contract"})
def _direct_planes(wf, wb, data_bits, listed_nonzeros, check, x, indptr, indices, data, bias,
                   offsets, starts, pix, ph, pw, sh, sw, rows, cols, plane, group, y, xpad, acc,
                   lo, hi):
    """y[n, m] for t = n * M + m in [lo, hi) (module docstring), on this worker's padded
    input xpad (`_scratch`: its padding zero) and accumulators acc (M/group, span). The
    planes of one (image, group) are summed together, channel block by channel block
    (starts[m, b]: row m's first listed weight in block b), so that a block's padded input
    stays in L1 while every plane takes its weights there; each plane's sums keep their
    order. With `check`, each output channel's weight row is checked (`_rows_unchanged`)
    the first time the range reaches it, just before its first sums, so that its reads
    overlap the computing; False at the first change, the rest left undone."""
    channels = x.shape[1]
    m_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    cg = channels // group
    mg = m_out // group
    span = acc.shape[1]
    vectors = span // LANES
    chunks = _chunks(vectors)
    blocks = starts.shape[1] - 1
    yf = y.reshape(-1)
    zero = y.dtype.type(0)
    t = lo
    while t < hi:
        n = t // m_out
        m0 = t - n * m_out
        g = m0 // mg
        m1 = min(hi - n * m_out, (g + 1) * mg)      # this image's and group's planes
        unchecked = min(m1, lo + m_out - n * m_out) if check else m0
        _pad_phases(x, n, g * cg, cg, ph, pw, sh, sw, rows, cols, plane, xpad)
        for i in range(m1 - m0):
            for q in range(span):
                acc[i, q] = zero
        for k in range(chunks):
            v0, v1 = vectors * k // chunks, vectors * (k + 1) // chunks
            for b in range(blocks):
                for m in range(m0, m1):
                    # a row is checked just before its first sums: its reads overlap them
                    if k == 0 and b == 0 and m < unchecked and not _rows_unchanged(
                            wf, wb, indptr, indices, data_bits, listed_nonzeros, m, m + 1):
                        return False
                    e0, e1 = starts[m, b], starts[m, b + 1]
                    if e1 > e0:
                        _plane_sums(xpad, pix, data, offsets, e0, e1, acc[m - m0], v0, v1)
        for m in range(m0, m1):
            b = bias[m] if bias.shape[0] else zero
            out0 = U((n * m_out + m) * oh * ow)
            for oy in range(oh):
                for ox in range(ow):
                    yf[out0 + U(oy * ow + ox)] = acc[m - m0, oy * cols + ox] + b
        t = n * m_out + m1
    return True


@kernel
def _chunks(vectors):
    """How many equal chunks of at most PLANE_MAX_VECTORS vectors a span is summed in."""
    return -(-vectors // PLANE_MAX_VECTORS)


def _block_starts(csr, columns_per_block, blocks):
    """(M, blocks + 1) int64: row m's first listed weight whose column is in block b (its
    columns sorted), and its end."""
    m = csr.shape[0]
    counts = np.zeros((m, blocks), np.int64)
    np.add.at(counts, (np.repeat(np.arange(m), np.diff(csr.indptr)),
                       csr.indices // columns_per_block), 1)
    starts = np.empty((m, blocks + 1), np.int64)
    starts[:, 0] = 0
    np.cumsum(counts, axis=1, out=starts[:, 1:])
    return starts + csr.indptr[:-1, None]


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


def _chunk_input(layout, geo):
    """Elements of one channel's padded input that a chunk of the span reads: in each stride
    phase, the chunk shifted by up to the filter's farthest tap."""
    vectors = len(layout.pix)
    chunk = -(-vectors // _chunks(vectors)) * LANES
    reach = ((geo.kernel_h - 1) * geo.dilation_h // geo.stride_h * layout.cols
             + (geo.kernel_w - 1) * geo.dilation_w // geo.stride_w)
    return min(layout.plane, geo.stride_h * geo.stride_w * (chunk + reach))


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
        self._offsets_for = self._offsets_layout = self._offsets = None

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
        if self._offsets_for is not weights or self._offsets_layout is not layout:
            self._offsets_for, self._offsets_layout = weights, layout
            self._offsets = layout.table[csr.indices]
            taps = geo.kernel_h * geo.kernel_w
            per_block = max(1, L1_INPUT_BYTES // (_chunk_input(layout, geo) * y.dtype.itemsize))
            self._starts = _block_starts(csr, per_block * taps,
                                         -(-(w2.shape[1] // taps) // per_block))
        args = (w2, w2.view(weights.data_bits.dtype), weights.data_bits, weights.listed_nonzeros,
                check, x, csr.indptr, csr.indices, csr.data, bias, self._offsets, self._starts,
                layout.pix, geo.pad_h, geo.pad_w, geo.stride_h, geo.stride_w, layout.rows,
                layout.cols, layout.plane, geo.group, y)
        calls = [(*args, *self._buffers(i, layout, x, geo, y, y.dtype), lo, hi)
                 for i, (lo, hi) in enumerate(self._ranges)]
        return all(threads.run_parallel(_direct_planes, calls))

    def _layout_for(self, x, geo, oh, dtype):
        key = (x.shape[1:], geo, oh, dtype)
        if key != self._layout_key:
            self._layout_key = key
            self._layout = _phases(geo, x.shape[1] // geo.group, x.shape[2], x.shape[3], oh)
            self._scratch = []              # another layout: other padding positions
        return self._layout

    def _buffers(self, worker, layout, x, geo, y, dtype):
        """Worker `worker`'s (padded input, accumulators of a group's planes), the input
        made zero for this layout."""
        while len(self._scratch) <= worker:
            span = len(layout.pix) * LANES
            self._scratch.append((np.zeros(x.shape[1] // geo.group * layout.plane + _ROUND,
                                           dtype),
                                  np.empty((y.shape[1] // geo.group, span), dtype)))
        return self._scratch[worker]

