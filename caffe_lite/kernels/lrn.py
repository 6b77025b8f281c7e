"""Local response normalisation kernels (Caffe's lrn_layer.cpp), NCHW, dtype-generic.

ACROSS_CHANNELS (size n odd, pre_pad = (n - 1) / 2):
  scale[c] = k + alpha/n * sum_{c' = c - pre_pad .. c + pre_pad} x[c']^2   (zero outside)
  y = x * scale^-beta
  dx = dy * scale^-beta - (2 alpha beta / n) * x * sum_{window} (dy * y / scale)
  Caffe keeps scale as a running sum over channels (add head, subtract tail); so do we.

WITHIN_CHANNEL: Caffe chains Split, Power(2), Pooling(AVE, kernel n, pad pre_pad, stride 1),
Power(power -beta, scale alpha, shift 1) and Eltwise(PROD); `k` is not used:
  y = x * (1 + alpha * avgpool(x^2))^-beta
The functions below run the same operations in the same order.
"""
import numpy as np

from .jit import kernel
from .neuron import split_range
from .pooling import AVE, pool_backward, pool_forward

_NO_MASK = np.zeros((1, 1, 1, 1), np.int64)


@kernel(nogil=True)
def _lrn_across_forward(x, size, alpha_over_size, neg_beta, k, scale, top, lo, hi):
    n_img, channels, height, width = x.shape
    pre_pad = (size - 1) // 2
    for task in range(lo, hi):
        n = task // height
        h = task % height
        # one running sum per pixel of the row; channel p of the padded stack is x[p - pre_pad]
        s = np.empty(width, dtype=x.dtype)
        for w in range(width):
            s[w] = k
        for p in range(size):
            c = p - pre_pad
            if 0 <= c < channels:
                for w in range(width):
                    v = x[n, c, h, w]
                    s[w] += alpha_over_size * (v * v)
        for w in range(width):
            scale[n, 0, h, w] = s[w]
        for c in range(1, channels):
            head = c + size - 1 - pre_pad
            tail = c - 1 - pre_pad
            if head < channels:
                for w in range(width):
                    v = x[n, head, h, w]
                    s[w] += alpha_over_size * (v * v)
            if tail >= 0:
                for w in range(width):
                    v = x[n, tail, h, w]
                    s[w] += -alpha_over_size * (v * v)
            for w in range(width):
                scale[n, c, h, w] = s[w]
        for c in range(channels):
            for w in range(width):
                top[n, c, h, w] = scale[n, c, h, w] ** neg_beta * x[n, c, h, w]


def lrn_across_forward(x, size, alpha_over_size, neg_beta, k, scale, top):
    """scale and top (N, C, H, W); the (image, row) tasks run over threads."""
    split_range(_lrn_across_forward, x.shape[0] * x.shape[2], x.size * (size + 2), x, size,
                alpha_over_size, neg_beta, k, scale, top)


@kernel(nogil=True)
def _lrn_across_backward(x, top, scale, top_diff, size, neg_beta, cache_ratio, bottom_diff,
                         lo, hi):
    n_img, channels, height, width = x.shape
    pre_pad = size - (size + 1) // 2
    for task in range(lo, hi):
        n = task // height
        h = task % height
        # padded ratio dy * y / scale, zero outside the channels
        ratio = np.zeros((channels + size - 1, width), dtype=x.dtype)
        accum = np.zeros(width, dtype=x.dtype)
        for c in range(channels):
            for w in range(width):
                sc = scale[n, c, h, w]
                bottom_diff[n, c, h, w] = sc ** neg_beta * top_diff[n, c, h, w]
                ratio[pre_pad + c, w] = top_diff[n, c, h, w] * top[n, c, h, w] / sc
        for p in range(size - 1):
            for w in range(width):
                accum[w] += ratio[p, w]
        for c in range(channels):
            for w in range(width):
                accum[w] += ratio[c + size - 1, w]
                bottom_diff[n, c, h, w] += -cache_ratio * (x[n, c, h, w] * accum[w])
                accum[w] += -ratio[c, w]


def lrn_across_backward(x, top, scale, top_diff, size, neg_beta, cache_ratio, bottom_diff):
    split_range(_lrn_across_backward, x.shape[0] * x.shape[2], x.size * 6, x, top, scale,
                top_diff, size, neg_beta, cache_ratio, bottom_diff)


def lrn_within_forward(x, size, alpha, neg_beta, pooled, power, top):
    """Fills pooled = avgpool(x^2), power = (1 + alpha*pooled)^-beta and top = x * power."""
    pre_pad = (size - 1) // 2
    dt = x.dtype.type
    pool_forward(x * x, AVE, size, size, 1, 1, pre_pad, pre_pad, pooled, _NO_MASK)
    base = pooled * dt(alpha) if alpha != 1 else pooled.copy()
    base += dt(1)
    np.power(base, dt(neg_beta), out=power)
    np.multiply(x, power, out=top)


def lrn_within_backward(x, size, alpha, neg_beta, pooled, power, top_diff, bottom_diff):
    """Backward through the Eltwise, Power, Pooling, Power(2) and Split chain."""
    pre_pad = (size - 1) // 2
    dt = x.dtype.type
    # Eltwise PROD: each input's diff is top_diff times the other input
    d_power = x * top_diff
    # Power y = (1 + alpha p)^-beta: dy/dp = (-beta alpha) * y / (1 + alpha p)
    diff_scale = dt(neg_beta) * dt(alpha)
    if diff_scale == 0:
        d_pooled = np.zeros_like(x)
    else:
        base = pooled * dt(alpha) if alpha != 1 else pooled.copy()
        base += dt(1)
        d_pooled = power / base
        if diff_scale != 1:
            d_pooled *= diff_scale
        d_pooled *= d_power
    d_square = np.empty_like(x)
    pool_backward(d_pooled, AVE, size, size, 1, 1, pre_pad, pre_pad, _NO_MASK, d_square)
    # Power(2): dy/dx = 2 x; Split sums the two branches
    d_square *= dt(2) * x
    np.multiply(top_diff, power, out=bottom_diff)
    bottom_diff += d_square
