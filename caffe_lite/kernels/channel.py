"""Per-channel reductions and scalings over an (outer, channels, inner) view.

Caffe sums such blobs with two matrix-vector products against vectors of ones: first each
(outer, channel) row over `inner`, then the row sums over `outer`. These kernels keep that
structure, in the data type:
  channel_sum(x, alpha, out):    out[c] = sum_o alpha * sum_i x[o, c, i]
  channel_dot(a, b, alpha, out): out[c] = sum_o alpha * sum_i a[o, c, i] * b[o, c, i]
A row sum is reassociated (several vector accumulators, as OpenBLAS's gemv sums), the sum
over `outer` runs in order; a strictly sequential row sum is latency-bound (one add per 4
cycles) and no closer to Caffe, whose gemv reassociates too.
Used by BatchNorm, Scale and Bias, with Scale's fused forward and backward and Bias's forward:
  scale_forward:  y = x * s[c] (+ b[c]), optionally keeping a copy of x (Scale in place)
  scale_backward: db[c] = sum dy;  ds[c] = sum dy * x;  dx = dy * s[c]   (one pass)
  bias_forward:   y = x + b[c]
Every kernel runs over a range of channels; split_range spreads the ranges over threads.
"""
from numba import njit

from .jit import kernel
from .neuron import (STREAMING_MIN, _leaky, relu_args, relu_value, same_buffer,
                     split_range)

_REASSOC = {"reassoc"}


@kernel(nogil=True, fastmath=_REASSOC)
def row_sum(a):
    total = a.dtype.type(0)
    for i in range(a.size):
        total += a[i]
    return total


@kernel(nogil=True, fastmath=_REASSOC)
def row_dot(a, b):
    total = a.dtype.type(0)
    for i in range(a.size):
        total += a[i] * b[i]
    return total


@kernel(nogil=True)
def _channel_sum(x, alpha, out, lo, hi):
    zero = x.dtype.type(0)
    for c in range(lo, hi):
        total = zero
        for o in range(x.shape[0]):
            total += alpha * row_sum(x[o, c])
        out[c] = total


@kernel(nogil=True)
def _channel_dot(a, b, alpha, out, lo, hi):
    zero = a.dtype.type(0)
    for c in range(lo, hi):
        total = zero
        for o in range(a.shape[0]):
            total += alpha * row_dot(a[o, c], b[o, c])
        out[c] = total


def channel_sum(x, alpha, out):
    split_range(_channel_sum, x.shape[1], x.size, x, alpha, out)


def channel_dot(a, b, alpha, out):
    split_range(_channel_dot, a.shape[1], 2 * a.size, a, b, alpha, out)


@njit(inline="always")
def scale_value_to(v, s, b, has_bias, y, r, o, c, relu, apart, slope):
    """One value's Scale, v * s[c] (+ b[c]), into y[o, c, 0]; then a fused ReLU's forward
    of it in place, or, apart, into r[o, c, 0]."""
    zero = y.dtype.type(0)
    w = v * s[c] + b[c] if has_bias else v * s[c]
    if apart:
        y[o, c, 0] = w
        r[o, c, 0] = _leaky(w, zero, slope)
    else:
        y[o, c, 0] = _leaky(w, zero, slope) if relu else w


@kernel(nogil=True)
def _scale_forward(x, s, b, y, keep, in_place, relu, slope, r, apart, lo, hi):
    """y = x * s (+ b); with in_place (y is x) the loops touch x alone, so they vectorize
    (an aliased y would take the scalar loop); then, with relu, ReLU's forward of y: in
    place, or, apart, into r (a ReLU with its own top)."""
    has_bias = b.size > 0
    has_keep = keep.size > 0
    apart = relu and apart
    zero = x.dtype.type(0)
    if x.shape[2] == 1:
        # one value per (image, channel) (Scale after InnerProduct): along the channels
        for o in range(x.shape[0]):
            for c in range(lo, hi):
                v = x[o, c, 0]
                if has_keep:
                    keep[o, c, 0] = v
                scale_value_to(v, s, b, has_bias, y, r, o, c, relu, apart, slope)
        return
    if apart and not in_place and not has_keep:
        _scale_relu_apart(x, s, b, y, has_bias, slope, r, lo, hi)
        return
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            sc = s[c]
            bc = b[c] if has_bias else sc
            xr, yr = x[o, c], y[o, c]
            if has_keep:
                kr = keep[o, c]
                for i in range(xr.size):
                    kr[i] = xr[i]
            # the ReLU in place goes in the same loop; apart, r is written after y
            fuse = relu and not apart
            if in_place and has_bias:
                for i in range(xr.size):
                    xr[i] = relu_value(xr[i] * sc + bc, fuse, zero, slope)
            elif in_place:
                for i in range(xr.size):
                    xr[i] = relu_value(xr[i] * sc, fuse, zero, slope)
            elif has_bias:
                for i in range(xr.size):
                    yr[i] = relu_value(xr[i] * sc + bc, fuse, zero, slope)
            else:
                for i in range(xr.size):
                    yr[i] = relu_value(xr[i] * sc, fuse, zero, slope)
            if apart:
                rr, yr = r[o, c], y[o, c]
                for i in range(yr.size):
                    rr[i] = _leaky(yr[i], zero, slope)


@njit(inline="always")
def _scale_relu_apart(x, s, b, y, has_bias, slope, r, lo, hi):
    """y = x * s (+ b) and r = ReLU's forward of y in one pass, y and r separate arrays:
    the ReLU layer's read of y saved."""
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            sc = s[c]
            bc = b[c] if has_bias else sc
            xr, yr, rr = x[o, c], y[o, c], r[o, c]
            if has_bias:
                for i in range(xr.size):
                    v = xr[i] * sc + bc
                    yr[i] = v
                    rr[i] = _leaky(v, zero, slope)
            else:
                for i in range(xr.size):
                    v = xr[i] * sc
                    yr[i] = v
                    rr[i] = _leaky(v, zero, slope)


def scale_forward(x, s, b, y, keep, relu_slope=None, relu_top=None):
    """y = x * s (+ b) over (outer, C, inner); b and keep may be empty; keep receives x
    before y is written (y may be x); then a fused ReLU's forward (relu_slope: its negative
    slope, None: no ReLU) on y in place, or into relu_top (the ReLU's own top)."""
    r = y if relu_top is None else relu_top
    split_range(_scale_forward, x.shape[1], 2 * x.size, x, s, b, y, keep, same_buffer(x, y),
                *relu_args(relu_slope, x.dtype), r, relu_top is not None,
                parallel_min=STREAMING_MIN)


@kernel(nogil=True)
def _bias_forward(x, b, y, in_place, lo, hi):
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            bc = b[c]
            xr, yr = x[o, c], y[o, c]
            if in_place:                # one array: the loop vectorizes
                for i in range(xr.size):
                    xr[i] += bc
            else:
                for i in range(xr.size):
                    yr[i] = xr[i] + bc


def bias_forward(x, b, y):
    """y = x + b[c] over (outer, C, inner); y may be x. Over both cores from PARALLEL_MIN:
    NumPy's broadcast add runs on one (mobilenet-0.5's data/bias at batch 8, 1.2 M values:
    0.34 ms against 0.24, and 0.74 in the net, where the input comes from memory)."""
    split_range(_bias_forward, x.shape[1], 2 * x.size, x, b, y, same_buffer(x, y))


@kernel(nogil=True)
def _scale_backward(dy, x, s, ds, db, dx, in_place, lo, hi):
    zero = dy.dtype.type(0)
    want_ds, want_db, want_dx = ds.size > 0, db.size > 0, dx.size > 0
    if dy.shape[2] == 1:
        # one value per (image, channel): along the channels, the same sums in the same order
        for c in range(lo, hi):
            if want_ds:
                ds[c] = zero
            if want_db:
                db[c] = zero
        for o in range(dy.shape[0]):
            for c in range(lo, hi):
                g = dy[o, c, 0]
                if want_db:
                    db[c] += g
                if want_ds:
                    ds[c] += g * x[o, c, 0]
                if want_dx:
                    dx[o, c, 0] = g * s[c]
        return
    for c in range(lo, hi):
        total_s = zero
        total_b = zero
        sc = s[c]
        for o in range(dy.shape[0]):
            g = dy[o, c]
            # sums first: dx may alias dy (Scale in place)
            if want_db:
                total_b += row_sum(g)
            if want_ds:
                total_s += row_dot(g, x[o, c])
            if want_dx and in_place:        # one array: the loop vectorizes
                for i in range(g.size):
                    g[i] = g[i] * sc
            elif want_dx:
                d = dx[o, c]
                for i in range(g.size):
                    d[i] = g[i] * sc
        if want_ds:
            ds[c] = total_s
        if want_db:
            db[c] = total_b


def scale_backward(dy, x, s, ds, db, dx):
    """ds[c] = sum dy * x, db[c] = sum dy (overwritten), dx = dy * s; any of ds, db, dx
    may be empty to skip it (x may then be empty too)."""
    in_place = dx.size > 0 and same_buffer(dy, dx)
    split_range(_scale_backward, dy.shape[1], 3 * dy.size, dy, x, s, ds, db, dx, in_place)
