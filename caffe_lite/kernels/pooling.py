"""Pooling kernels: Caffe's pooling_layer.cpp (MAX, AVE) and pooling_layer.cu (STOCHASTIC).

Arrays are NCHW. Window (ph, pw) covers rows hstart = ph * stride_h - pad_h .. + kernel_h
(columns likewise).
  MAX         window clipped to the image; max with strict '>' from -FLT_MAX, so the first
              maximum in row-major order wins; mask = h * W + w of the winner (-1: none).
  AVE         pool_size = (hend - hstart) * (wend - wstart) with hend = min(hstart + k, H + pad),
              taken BEFORE the window is clipped to the image; sum over the clipped window.
  STOCHASTIC  (Caffe has it on the GPU only; no padding) TRAIN: thres = r * sum(window),
              r ~ U(0, 1]; the first element whose running sum reaches thres is picked, its
              index kept for backward. TEST: sum(x^2) / (FLT_MIN + sum(x)).
Kernels are dtype-generic and work on (planes, H, W) views; pool_forward / pool_backward
dispatch on `method` (0 MAX, 1 AVE, 2 STOCHASTIC) and spread the planes over threads
(split_range); sums run in the data type in Caffe's loop order.
"""
import math

import numpy as np
from numba import uint64 as U

from .jit import kernel
from .neuron import split_range

FLT_MAX = 3.4028234663852886e38
FLT_MIN = 1.1754943508222875e-38


def pooled_size(size, kernel, pad, stride, ceil_mode=True):
    """Caffe's pooled extent along one axis (PoolingLayer::Reshape)."""
    # Caffe divides in float32, rounds up (CEIL, the default) or down (FLOOR) ...
    q = np.float32(size + 2 * pad - kernel) / np.float32(stride)
    out = int(math.ceil(q) if ceil_mode else math.floor(q)) + 1
    # ... then drops a last window that would start in the bottom/right padding.
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


MAX, AVE, STOCHASTIC = 0, 1, 2


@kernel(nogil=True, inline="always")
def _pick(v, i, best, idx):
    """One step of the window scan: strict '>' as a select (a branch per element
    mispredicts on about every third element of random data)."""
    take = v > best
    return (v if take else best), (i if take else idx)


@kernel(nogil=True)
def _max_clipped(xp, hstart, hend, wstart, wend, width, lowest):
    """(max, h * W + w) over rows hstart..hend, columns wstart..wend (clipped window)."""
    best = lowest
    idx = -1
    for h in range(hstart, hend):
        row = xp[h]
        base = h * width
        for w in range(wstart, wend):
            best, idx = _pick(row[w], base + w, best, idx)
    return best, idx


@kernel(nogil=True, inline="always")
def _max_row_2x2(xp, hstart, width, c0, c1, stride, pad_w, lowest, t_row, m_row):
    """Outputs c0..c1 of one row of 2x2 windows inside the image."""
    r0 = xp[hstart]
    r1 = xp[hstart + 1]
    b0 = hstart * width
    for pw in range(c0, c1):
        w = pw * stride - pad_w
        best, idx = _pick(r0[w], b0 + w, lowest, -1)
        best, idx = _pick(r0[w + 1], b0 + w + 1, best, idx)
        best, idx = _pick(r1[w], b0 + width + w, best, idx)
        best, idx = _pick(r1[w + 1], b0 + width + w + 1, best, idx)
        t_row[pw] = best
        m_row[pw] = idx


@kernel(nogil=True, inline="always")
def _max_row_3x3(xp, hstart, width, c0, c1, stride, pad_w, lowest, t_row, m_row):
    """Outputs c0..c1 of one row of 3x3 windows inside the image."""
    r0 = xp[hstart]
    r1 = xp[hstart + 1]
    r2 = xp[hstart + 2]
    b0 = hstart * width
    b1 = b0 + width
    b2 = b1 + width
    for pw in range(c0, c1):
        w = pw * stride - pad_w
        best, idx = _pick(r0[w], b0 + w, lowest, -1)
        best, idx = _pick(r0[w + 1], b0 + w + 1, best, idx)
        best, idx = _pick(r0[w + 2], b0 + w + 2, best, idx)
        best, idx = _pick(r1[w], b1 + w, best, idx)
        best, idx = _pick(r1[w + 1], b1 + w + 1, best, idx)
        best, idx = _pick(r1[w + 2], b1 + w + 2, best, idx)
        best, idx = _pick(r2[w], b2 + w, best, idx)
        best, idx = _pick(r2[w + 1], b2 + w + 1, best, idx)
        best, idx = _pick(r2[w + 2], b2 + w + 2, best, idx)
        t_row[pw] = best
        m_row[pw] = idx


@kernel(nogil=True)
def _max_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask, lo, hi):
    """Planes lo..hi of (P, H, W): max with strict '>' from -FLT_MAX, first maximum in
    row-major order. Windows inside the image take a fixed-size path (2x2 and 3x3 unrolled,
    else a flat offset table); those that overhang the image are clipped."""
    _, height, width = x.shape
    out_h, out_w = top.shape[1], top.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    # output columns whose window lies inside the image
    c_lo = min((pad_w + stride_w - 1) // stride_w, out_w)
    c_hi = (width + pad_w - kernel_w) // stride_w + 1 if width + pad_w >= kernel_w else 0
    c_hi = max(min(c_hi, out_w), c_lo)
    offsets = np.empty(kernel_h * kernel_w, np.int64)
    for a in range(kernel_h):
        for b in range(kernel_w):
            offsets[a * kernel_w + b] = a * width + b
    for p in range(lo, hi):
        xp = x[p]
        xf = xp.ravel()
        tp = top[p]
        mp = mask[p]
        for ph in range(out_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height)
            inside = hstart >= 0 and hstart + kernel_h <= height
            c0 = c_lo if inside else out_w
            c1 = c_hi if inside else out_w
            for pw in range(c0):
                wstart = pw * stride_w - pad_w
                tp[ph, pw], mp[ph, pw] = _max_clipped(
                    xp, max(hstart, 0), hend, max(wstart, 0), min(wstart + kernel_w, width),
                    width, lowest)
            if c1 > c0:
                if kernel_h == 2 and kernel_w == 2:
                    _max_row_2x2(xp, hstart, width, c0, c1, stride_w, pad_w, lowest, tp[ph],
                                 mp[ph])
                elif kernel_h == 3 and kernel_w == 3:
                    _max_row_3x3(xp, hstart, width, c0, c1, stride_w, pad_w, lowest, tp[ph],
                                 mp[ph])
                else:
                    b0 = hstart * width - pad_w
                    for pw in range(c0, c1):
                        base = b0 + pw * stride_w
                        best = lowest
                        idx = -1
                        for j in range(offsets.size):
                            i = base + offsets[j]
                            best, idx = _pick(xf[i], i, best, idx)
                        tp[ph, pw] = best
                        mp[ph, pw] = idx
            for pw in range(c1, out_w):
                wstart = pw * stride_w - pad_w
                tp[ph, pw], mp[ph, pw] = _max_clipped(
                    xp, max(hstart, 0), hend, max(wstart, 0), min(wstart + kernel_w, width),
                    width, lowest)


def _tiles_2x2(x_hw, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """Whether 2x2 windows at stride 2 tile the unpadded (H, W) image exactly: every input
    in one window, none clipped (LeNet's, miniVggNet's and VGG's pooling)."""
    height, width = x_hw
    return (kernel_h == kernel_w == stride_h == stride_w == 2 and pad_h == pad_w == 0
            and height % 2 == 0 and width % 2 == 0)


@kernel(nogil=True)
def _max_2x2_tiles(x, top, mask, lo, hi):
    """_max_forward for tiling 2x2 windows (_tiles_2x2), over rows lo..hi of the planes'
    stacked (P * OH, OW) output: output row r reads input rows 2r and 2r + 1 of the stacked
    (P * H, W) input, so the loops need no view per plane or row. Same picks, same order."""
    width = x.shape[2]
    out_h, out_w = top.shape[1], top.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    xf, tf, mf = x.reshape(-1), top.reshape(-1), mask.reshape(-1)
    for r in range(lo, hi):
        i0 = U(2 * r * width)
        b0 = 2 * (r % out_h) * width            # the window's first index in its plane
        o0 = U(r * out_w)
        for c in range(out_w):
            w = 2 * c
            best, idx = _pick(xf[i0 + U(w)], b0 + w, lowest, -1)
            best, idx = _pick(xf[i0 + U(w + 1)], b0 + w + 1, best, idx)
            best, idx = _pick(xf[i0 + U(width + w)], b0 + width + w, best, idx)
            best, idx = _pick(xf[i0 + U(width + w + 1)], b0 + width + w + 1, best, idx)
            tf[o0 + U(c)] = best
            mf[o0 + U(c)] = idx


@kernel(nogil=True)
def _max_2x2_values(x, top, lo, hi):
    """_max_2x2_tiles without the mask (a forward that no backward follows): the same picks,
    in the same order, with nothing else in the loop, which LLVM then vectorizes."""
    width = x.shape[2]
    out_w = top.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    xf, tf = x.reshape(-1), top.reshape(-1)
    for r in range(lo, hi):
        i0 = U(2 * r * width)
        o0 = U(r * out_w)
        for c in range(out_w):
            w = U(2 * c)
            best = lowest
            for v in (xf[i0 + w], xf[i0 + w + U(1)], xf[i0 + U(width) + w],
                      xf[i0 + U(width) + w + U(1)]):
                best = v if v > best else best
            tf[o0 + U(c)] = best


@kernel(nogil=True, inline="always")
def _3x3s2_row(r, x, top):
    """For row r of the stacked output of 3x3 windows at stride 2: its plane, first input
    row, offsets of its first output and first input, and how many of its windows lie
    inside the image (none where the rows overhang)."""
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = top.shape[1], top.shape[2]
    p = r // out_h
    hstart = 2 * (r - p * out_h)
    inside = min((width - 3) // 2 + 1, out_w) if width >= 3 and hstart + 3 <= height else 0
    return p, hstart, U(r * out_w), U((p * height + hstart) * width), inside


@kernel(nogil=True)
def _max_3x3s2_values(x, top, lo, hi):
    """_max_3x3s2_rows without the mask (a forward that no backward follows): the same
    picks, in the same order (cifar10_quick's pool1 at batch 1: 43 -> 25 us)."""
    height, width = x.shape[1], x.shape[2]
    out_w = top.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    xf, tf = x.reshape(-1), top.reshape(-1)
    for r in range(lo, hi):
        p, hstart, o0, i0, inside = _3x3s2_row(r, x, top)
        for pw in range(inside):
            w = U(2 * pw)
            best = lowest
            for k in (0, 1, 2):
                row = i0 + U(k * width) + w
                for d in (0, 1, 2):
                    v = xf[row + U(d)]
                    best = v if v > best else best
            tf[o0 + U(pw)] = best
        hend = min(hstart + 3, height)
        for pw in range(inside, out_w):
            best = lowest
            for h in range(hstart, hend):
                for w in range(2 * pw, min(2 * pw + 3, width)):
                    v = x[p, h, w]
                    best = v if v > best else best
            tf[o0 + U(pw)] = best


@kernel(nogil=True)
def _max_3x3s2_rows(x, top, mask, lo, hi):
    """_max_forward for 3x3 windows at stride 2 without padding (cifar10's, CaffeNet's
    pooling), over rows lo..hi of the planes' stacked (P * OH, OW) output. The stride is a
    constant here, so the loop over a row's inside windows vectorizes; windows that overhang
    the image (Caffe's ceil rounding) take the clipped scan. Same picks, same order."""
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = top.shape[1], top.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    inside_w = min((width - 3) // 2 + 1, out_w) if width >= 3 else 0
    xf, tf, mf = x.reshape(-1), top.reshape(-1), mask.reshape(-1)
    for r in range(lo, hi):
        p = r // out_h
        hstart = 2 * (r - p * out_h)
        o0 = U(r * out_w)
        c0 = 0
        if hstart + 3 <= height:
            c0 = inside_w
            i0 = U((p * height + hstart) * width)
            b0 = hstart * width
            b1 = b0 + width
            b2 = b1 + width
            for pw in range(inside_w):
                w = 2 * pw
                best, idx = _pick(xf[i0 + U(w)], b0 + w, lowest, -1)
                best, idx = _pick(xf[i0 + U(w + 1)], b0 + w + 1, best, idx)
                best, idx = _pick(xf[i0 + U(w + 2)], b0 + w + 2, best, idx)
                best, idx = _pick(xf[i0 + U(width + w)], b1 + w, best, idx)
                best, idx = _pick(xf[i0 + U(width + w + 1)], b1 + w + 1, best, idx)
                best, idx = _pick(xf[i0 + U(width + w + 2)], b1 + w + 2, best, idx)
                best, idx = _pick(xf[i0 + U(2 * width + w)], b2 + w, best, idx)
                best, idx = _pick(xf[i0 + U(2 * width + w + 1)], b2 + w + 1, best, idx)
                best, idx = _pick(xf[i0 + U(2 * width + w + 2)], b2 + w + 2, best, idx)
                tf[o0 + U(pw)] = best
                mf[o0 + U(pw)] = idx
        hend = min(hstart + 3, height)
        for pw in range(c0, out_w):
            wstart = 2 * pw
            tf[o0 + U(pw)], mf[o0 + U(pw)] = _max_clipped(
                x[p], hstart, hend, wstart, min(wstart + 3, width), width, lowest)


@kernel(nogil=True)
def _ave_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, lo, hi):
    _, height, width = x.shape
    out_h, out_w = top.shape[1], top.shape[2]
    zero = x.dtype.type(0)
    for p in range(lo, hi):
        xp = x[p]
        for ph in range(out_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height + pad_h)
            for pw in range(out_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width + pad_w)
                pool_size = (hend - hstart) * (wend - wstart)
                h0, w0 = max(hstart, 0), max(wstart, 0)
                h1, w1 = min(hend, height), min(wend, width)
                acc = zero
                for h in range(h0, h1):
                    row = xp[h]
                    for w in range(w0, w1):
                        acc += row[w]
                top[p, ph, pw] = acc / x.dtype.type(pool_size)


@kernel(nogil=True)
def _sto_test_forward(x, kernel_h, kernel_w, stride_h, stride_w, top, lo, hi):
    out_h, out_w = top.shape[1], top.shape[2]
    for p in range(lo, hi):
        for ph in range(out_h):
            for pw in range(out_w):
                _, _, _, _, cumsum, cumvalues = _sto_window(x[p], ph, pw, kernel_h, kernel_w,
                                                            stride_h, stride_w)
                top[p, ph, pw] = cumvalues / cumsum


@kernel(inline="always")
def _sto_window(xp, ph, pw, kernel_h, kernel_w, stride_h, stride_w):
    """STOCHASTIC's window (no padding) of output (ph, pw) in plane xp: hstart, hend, wstart,
    wend, FLT_MIN + sum(x) and sum(x^2). FLT_MIN keeps an all-zero window from dividing by
    zero."""
    height, width = xp.shape
    hstart = ph * stride_h
    hend = min(hstart + kernel_h, height)
    wstart = pw * stride_w
    wend = min(wstart + kernel_w, width)
    cumsum = xp.dtype.type(FLT_MIN)
    cumvalues = xp.dtype.type(0)
    for h in range(hstart, hend):
        for w in range(wstart, wend):
            v = xp[h, w]
            cumsum += v
            cumvalues += v * v
    return hstart, hend, wstart, wend, cumsum, cumvalues


@kernel(nogil=True)
def sto_pool_backward_test(x, top, top_diff, kernel_h, kernel_w, stride_h, stride_w,
                           bottom_diff):
    """bottom_diff = the gradient of TEST's y = sum(x^2) / (FLT_MIN + sum(x)) per window,
    dy/dx = (2 x - y) / (FLT_MIN + sum(x)), on planes (N*C, H, W). Caffe has none: its CPU
    backward is NOT_IMPLEMENTED and its GPU one reads an index that TEST never writes."""
    out_h, out_w = top.shape[1], top.shape[2]
    bottom_diff[...] = 0
    for p in range(x.shape[0]):
        for ph in range(out_h):
            for pw in range(out_w):
                hstart, hend, wstart, wend, cumsum, _ = _sto_window(
                    x[p], ph, pw, kernel_h, kernel_w, stride_h, stride_w)
                scale = top_diff[p, ph, pw] / cumsum
                y = top[p, ph, pw]
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        bottom_diff[p, h, w] += scale * (2 * x[p, h, w] - y)


def _planes(a):
    return a.reshape(-1, a.shape[-2], a.shape[-1])


def pool_forward(x, method, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask):
    """MAX (mask = h * W + w of the winner, -1 if none; None: not wanted), AVE, or
    STOCHASTIC's TEST output. x, top, mask are NCHW; the planes run over threads."""
    x3, t3 = _planes(x), _planes(top)
    n = x3.shape[0]
    work = x.size + top.size * kernel_h * kernel_w
    geometry = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)
    if method == MAX and mask is None:
        if _tiles_2x2(x3.shape[1:], *geometry):
            split_range(_max_2x2_values, n * t3.shape[1], work, x3, t3)
            return
        if geometry == (3, 3, 2, 2, 0, 0):
            split_range(_max_3x3s2_values, n * t3.shape[1], work, x3, t3)
            return
        mask = np.empty(top.shape, np.int64)        # the other windows pick with a mask
    if method == MAX and _is_1x1(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
        split_range(_max_1x1, n, 2 * x.size, x3, t3, _planes(mask))
    elif method == MAX and _tiles_2x2(x3.shape[1:], kernel_h, kernel_w, stride_h, stride_w,
                                      pad_h, pad_w):
        split_range(_max_2x2_tiles, n * t3.shape[1], work, x3, t3, _planes(mask))
    elif method == MAX and (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) == \
            (3, 3, 2, 2, 0, 0):
        split_range(_max_3x3s2_rows, n * t3.shape[1], work, x3, t3, _planes(mask))
    elif method == MAX:
        split_range(_max_forward, n, work, x3, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                    pad_w, t3, _planes(mask))
    elif method == AVE:
        split_range(_ave_forward, n, work, x3, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                    pad_w, t3)
    else:
        split_range(_sto_test_forward, n, work, x3, kernel_h, kernel_w, stride_h, stride_w,
                    t3)


def _is_1x1(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    return (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) == (1, 1, 1, 1, 0, 0)


@kernel(nogil=True)
def _max_1x1(x, top, mask, lo, hi):
    """Planes lo..hi for a 1x1 window at stride 1 without padding (JacintoNet11's pool1 and
    pool3): each output is the window scan's one step from -FLT_MAX, so the input where it
    is greater, else -FLT_MAX with mask -1 (NaN and -inf too, as in Caffe). One flat pass:
    the window loops took 2.3 ms for 2 M values, this 0.7. (The backward's scatter along the
    mask is already one pass: a flat select in its place was no faster.)"""
    lowest = x.dtype.type(-FLT_MAX)
    plane = x.shape[1] * x.shape[2]
    xf, tf, mf = x.reshape(-1), top.reshape(-1), mask.reshape(-1)
    for p in range(lo, hi):
        base = U(p * plane)
        for j in range(plane):
            v = xf[base + U(j)]
            take = v > lowest
            tf[base + U(j)] = v if take else lowest
            mf[base + U(j)] = j if take else -1


@kernel(nogil=True)
def _mask_backward(top_diff, mask, bottom_diff, lo, hi):
    """bottom = 0, then each top diff added at its mask index (-1: nowhere). Flat offsets
    rather than a view per plane: LeNet's pool2 has 3,200 planes of 16 outputs."""
    zero = bottom_diff.dtype.type(0)
    in_plane = bottom_diff.shape[1] * bottom_diff.shape[2]
    out_plane = top_diff.shape[1] * top_diff.shape[2]
    bf, tf, mf = bottom_diff.reshape(-1), top_diff.reshape(-1), mask.reshape(-1)
    for i in range(U(lo * in_plane), U(hi * in_plane)):
        bf[i] = zero
    for p in range(lo, hi):
        base = U(p * in_plane)
        for i in range(U(p * out_plane), U((p + 1) * out_plane)):
            idx = mf[i]
            if idx >= 0:
                bf[base + U(idx)] += tf[i]


@kernel(nogil=True)
def _ave_backward(top_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                  bottom_diff, lo, hi):
    """bottom = 0, then top diff / pool_size spread over each window, in Caffe's order."""
    _, height, width = bottom_diff.shape
    out_h, out_w = top_diff.shape[1], top_diff.shape[2]
    zero = bottom_diff.dtype.type(0)
    for p in range(lo, hi):
        bp = bottom_diff[p]
        for h in range(height):
            for w in range(width):
                bp[h, w] = zero
        for ph in range(out_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height + pad_h)
            for pw in range(out_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width + pad_w)
                pool_size = (hend - hstart) * (wend - wstart)
                h0, w0 = max(hstart, 0), max(wstart, 0)
                h1, w1 = min(hend, height), min(wend, width)
                g = top_diff[p, ph, pw] / bottom_diff.dtype.type(pool_size)
                for h in range(h0, h1):
                    row = bp[h]
                    for w in range(w0, w1):
                        row[w] += g


def pool_backward(top_diff, method, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                  mask, bottom_diff):
    """bottom_diff = 0, then MAX/STOCHASTIC add each top diff at its mask index, AVE spreads
    top diff / pool_size over the window, in Caffe's loop order."""
    d3, b3 = _planes(top_diff), _planes(bottom_diff)
    n = b3.shape[0]
    work = bottom_diff.size + top_diff.size * (kernel_h * kernel_w if method == AVE else 1)
    if method == AVE:
        split_range(_ave_backward, n, work, d3, kernel_h, kernel_w, stride_h, stride_w,
                    pad_h, pad_w, b3)
    else:
        split_range(_mask_backward, n, work, d3, _planes(mask), b3)


@kernel
def sto_pool_forward_train(x, kernel_h, kernel_w, stride_h, stride_w, rand, top, index):
    """rand: U(0, 1] per output; index receives the picked h * W + w."""
    n_img, channels, height, width = x.shape
    out_h, out_w = top.shape[2], top.shape[3]
    zero = x.dtype.type(0)
    for n in range(n_img):
        for c in range(channels):
            for ph in range(out_h):
                hstart = ph * stride_h
                hend = min(hstart + kernel_h, height)
                for pw in range(out_w):
                    wstart = pw * stride_w
                    wend = min(wstart + kernel_w, width)
                    cumsum = zero
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            cumsum += x[n, c, h, w]
                    # Caffe keeps the threshold in a float, whatever the data type.
                    thres = np.float32(rand[n, c, ph, pw] * cumsum)
                    cumsum = zero
                    # a threshold never reached (rounding) keeps the last element
                    pick = (hend - 1) * width + (wend - 1)
                    found = False
                    for h in range(hstart, hend):
                        if found:
                            break
                        for w in range(wstart, wend):
                            cumsum += x[n, c, h, w]
                            if cumsum >= thres:
                                pick = h * width + w
                                found = True
                                break
                    index[n, c, ph, pw] = pick
                    top[n, c, ph, pw] = x[n, c, pick // width, pick % width]
