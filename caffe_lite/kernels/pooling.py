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
Kernels are dtype-generic; forward and backward run parallel over (image, channel) planes
(one kernel each for the three methods, `method` = 0 MAX, 1 AVE, 2 STOCHASTIC); sums run
in the data type in Caffe's loop order.
"""
import math

import numpy as np
from numba import njit, prange

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


@njit(cache=True, parallel=True)
def pool_forward(x, method, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask):
    """MAX (mask = h * W + w of the winner, -1 if none), AVE, or STOCHASTIC's TEST output."""
    n_img, channels, height, width = x.shape
    out_h, out_w = top.shape[2], top.shape[3]
    zero = x.dtype.type(0)
    lowest = x.dtype.type(-FLT_MAX)
    tiny = x.dtype.type(FLT_MIN)
    for task in prange(n_img * channels):
        n = task // channels
        c = task % channels
        for ph in range(out_h):
            for pw in range(out_w):
                hstart = ph * stride_h - pad_h
                wstart = pw * stride_w - pad_w
                if method == MAX:
                    hend = min(hstart + kernel_h, height)
                    wend = min(wstart + kernel_w, width)
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    best = lowest
                    idx = -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            v = x[n, c, h, w]
                            if v > best:
                                best = v
                                idx = h * width + w
                    top[n, c, ph, pw] = best
                    mask[n, c, ph, pw] = idx
                elif method == AVE:
                    hend = min(hstart + kernel_h, height + pad_h)
                    wend = min(wstart + kernel_w, width + pad_w)
                    pool_size = (hend - hstart) * (wend - wstart)
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    hend = min(hend, height)
                    wend = min(wend, width)
                    acc = zero
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            acc += x[n, c, h, w]
                    top[n, c, ph, pw] = acc / x.dtype.type(pool_size)
                else:
                    hend = min(hstart + kernel_h, height)
                    wend = min(wstart + kernel_w, width)
                    # FLT_MIN keeps an all-zero window from dividing by zero
                    cumsum = tiny
                    cumvalues = zero
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            v = x[n, c, h, w]
                            cumsum += v
                            cumvalues += v * v
                    top[n, c, ph, pw] = cumvalues / cumsum


@njit(cache=True, parallel=True)
def pool_backward(top_diff, method, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                  mask, bottom_diff):
    """bottom_diff = 0, then MAX/STOCHASTIC add each top diff at its mask index, AVE spreads
    top diff / pool_size over the window, in Caffe's loop order."""
    n_img, channels, height, width = bottom_diff.shape
    out_h, out_w = top_diff.shape[2], top_diff.shape[3]
    zero = bottom_diff.dtype.type(0)
    for task in prange(n_img * channels):
        n = task // channels
        c = task % channels
        for h in range(height):
            for w in range(width):
                bottom_diff[n, c, h, w] = zero
        for ph in range(out_h):
            for pw in range(out_w):
                if method != AVE:
                    idx = int(mask[n, c, ph, pw])
                    if idx >= 0:
                        bottom_diff[n, c, idx // width, idx % width] += top_diff[n, c, ph, pw]
                    continue
                hstart = ph * stride_h - pad_h
                wstart = pw * stride_w - pad_w
                hend = min(hstart + kernel_h, height + pad_h)
                wend = min(wstart + kernel_w, width + pad_w)
                pool_size = (hend - hstart) * (wend - wstart)
                hstart = max(hstart, 0)
                wstart = max(wstart, 0)
                hend = min(hend, height)
                wend = min(wend, width)
                g = top_diff[n, c, ph, pw] / bottom_diff.dtype.type(pool_size)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        bottom_diff[n, c, h, w] += g


@njit(cache=True)
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
