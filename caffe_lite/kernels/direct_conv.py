"""Direct sparse convolution (SSL's DIRECT_SCONV; with every weight listed, DIRECT_DCONV):
y = conv(x, w) + bias without lowering, after Park et al., "Holistic SparseCNN".

Each output plane (image n, output channel m) is the sum, over its filter's non-zeros
(c, ki, kj, value), of value times the input plane c shifted by the tap (ki, kj). Those sums
read the input only, which stays in cache (CaffeNet conv3's padded input is 230 KB against
the 1.5 MB its lowered copy would take), and cost one multiply-add per non-zero and output.

The loop over outputs is made one long stride-1 loop for every tap, whatever the stride, so
that it vectorizes and eight non-zeros share each load and store of the accumulator:
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
Sums run over a filter's non-zeros in (c, ki, kj) order, eight at a time, then the bias is
added (Caffe's order of the bias), so results match the dense convolution to rounding.
"""
from typing import NamedTuple

import numpy as np
from numba import njit, uint64 as U

from .sparse import _split


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


#: the accumulated span is rounded up to a multiple of this many elements (the rest is
#: dropped, as the virtual columns are): LLVM's vector loop then has no scalar remainder,
#: which cost CaffeNet conv3-conv5 (195 outputs per plane) 30-50% of their time
_ROUND = 16


@njit(cache=True, nogil=True, fastmath={"contract"})
def _direct_planes(x, indptr, indices, data, bias, table, ph, pw, sh, sw, rows, cols, plane,
                   group, y, lo, hi):
    """y[n, m] for t = n * M + m in [lo, hi) (module docstring)."""
    channels = x.shape[1]
    m_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    cg = channels // group
    mg = m_out // group
    span = -(-oh * cols // _ROUND) * _ROUND
    xpad = np.zeros(cg * plane + _ROUND, x.dtype)
    acc = np.empty(span, y.dtype)
    yf = y.reshape(-1)
    zero = y.dtype.type(0)
    padded = -1
    for t in range(lo, hi):
        n = t // m_out
        m = t - n * m_out
        if n * group + m // mg != padded:      # consecutive t share their image and group
            padded = n * group + m // mg
            _pad_phases(x, n, (m // mg) * cg, cg, ph, pw, sh, sw, rows, cols, plane, xpad)
        for q in range(span):
            acc[q] = zero
        e = indptr[m]
        e1 = indptr[m + 1]
        while e + 8 <= e1:      # one load and store of acc serves eight weights
            o0, o1 = U(table[indices[e]]), U(table[indices[e + 1]])
            o2, o3 = U(table[indices[e + 2]]), U(table[indices[e + 3]])
            o4, o5 = U(table[indices[e + 4]]), U(table[indices[e + 5]])
            o6, o7 = U(table[indices[e + 6]]), U(table[indices[e + 7]])
            v0, v1, v2, v3 = data[e], data[e + 1], data[e + 2], data[e + 3]
            v4, v5, v6, v7 = data[e + 4], data[e + 5], data[e + 6], data[e + 7]
            for q in range(span):
                acc[q] += (((v0 * xpad[o0 + U(q)] + v1 * xpad[o1 + U(q)])
                            + (v2 * xpad[o2 + U(q)] + v3 * xpad[o3 + U(q)]))
                           + ((v4 * xpad[o4 + U(q)] + v5 * xpad[o5 + U(q)])
                              + (v6 * xpad[o6 + U(q)] + v7 * xpad[o7 + U(q)])))
            e += 8
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


def direct_conv(x, w_csr, bias, geo, y):
    """y (N, M, OH, OW) = conv(x (N, C, H, W), w) + bias, with w's (M, C/g*kh*kw) view as
    CSR (`csr_from_dense(w.reshape(M, -1))`; keep_zeros=True for the dense convolution).
    Split over (image, output channel) pairs, balanced on the listed weights."""
    n, m, oh = y.shape[:3]
    layout = _phases(geo, x.shape[1] // geo.group, x.shape[2], x.shape[3], oh)
    bias = np.empty(0, y.dtype) if bias is None else np.ascontiguousarray(bias, y.dtype)
    per_channel = np.diff(w_csr.indptr) + 1
    cost = np.zeros(n * m + 1, np.int64)
    np.cumsum(np.tile(per_channel, n), out=cost[1:])
    args = (np.ascontiguousarray(x), w_csr.indptr, w_csr.indices, w_csr.data, bias, layout.table,
            geo.pad_h, geo.pad_w, geo.stride_h, geo.stride_w, layout.rows, layout.cols,
            layout.plane, geo.group, y)
    _split(_direct_planes, args, cost, int(cost[-1]) * oh * y.shape[3])
    return y
