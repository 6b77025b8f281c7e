"""Batch normalisation kernels: BVLC batch_norm_layer.cpp and NVCaffe's forms.

Arrays are viewed as (N, C, S) with S the product of the axes after the channel axis;
statistics are per channel, over N and S. Arithmetic stays in the data type, in the order of
the C++ code (row sums as in kernels/channel.py):

BVLC (row sums scaled by 1/(N*S) before the sum over N, division by the standard deviation):
  mean = sum_n (1/(N S) sum_s x);   var = same over (x - mean)^2
  y = (x - mean) / sqrt(var + eps)
  dx = (dy - (1/(N S)) (sum(dy) + sum(dy * y) * y)) / sqrt(var + eps)
  global stats: mean = blob0 * f, var = blob1 * f with f = 1/blob2 (0 if blob2 == 0); dx = dy / std

NVCaffe (sums first, then scaled; multiplication by (var + eps)^-0.5; a learnable scale s and
bias b follow, dy * s is what the normalisation's backward sees):
  mean = (1/(N S)) sum x;  y = (x - mean) * (var + eps)^-0.5
  dx = (g - mean(g) - mean(g * y) * y) * (var + eps)^-0.5,  g = dy * s

Each statistic or output is one fused pass per channel (no temporaries the size of x); the
statistics run over channel ranges spread over threads by split_range, the normalisations
over whole images where there are enough (split_images). Per-channel vectors between the
passes come from NumPy (NVCaffe's power) or one small kernel (BVLC's running update and
sqrt).
"""
import numpy as np
from numba import njit

from .. import threads
from . import neuron
from .channel import row_sum, scale_value_to
from .jit import kernel
from .neuron import (STREAMING_MIN, _leaky, relu_args, relu_value, same_buffer,
                     split_range)

_EMPTY = {}


def _empty(dtype, ndim=1):
    key = (np.dtype(dtype), ndim)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype)
    return _EMPTY[key]


# --- statistics -------------------------------------------------------------------------------
@kernel(nogil=True, fastmath={"reassoc"})
def _centered_sq_sum(a, m):
    total = a.dtype.type(0)
    for i in range(a.size):
        d = a[i] - m
        total += d * d
    return total


@njit(inline="always")
def _stats_by_value(x, pre, post, mean, var, lo, hi):
    """_batch_stats for one value per (image, channel): the sums run along the channels,
    each channel's still in image order (a one-value row sum is that value, as pre * 0 + v
    is pre * v: the same bits)."""
    zero = x.dtype.type(0)
    for c in range(lo, hi):
        mean[c] = zero
        var[c] = zero
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            mean[c] += pre * x[o, c, 0]
    for c in range(lo, hi):
        mean[c] *= post
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            d = x[o, c, 0] - mean[c]
            var[c] += pre * (d * d)
    for c in range(lo, hi):
        var[c] *= post


@kernel(nogil=True)
def _batch_stats(x, pre, post, mean, var, lo, hi):
    """mean = post * sum_o pre * rowsum(x); var likewise over (x - mean)^2."""
    zero = x.dtype.type(0)
    if x.shape[2] == 1:
        _stats_by_value(x, pre, post, mean, var, lo, hi)
        return
    for c in range(lo, hi):
        total = zero
        for o in range(x.shape[0]):
            total += pre * row_sum(x[o, c])
        m = total * post
        total = zero
        for o in range(x.shape[0]):
            total += pre * _centered_sq_sum(x[o, c], m)
        mean[c] = m
        var[c] = total * post


def bvlc_batch_stats(x, mean, var):
    """Batch mean and biased variance (rows scaled before the sum) into mean, var (C,)."""
    n_img, channels, spatial = x.shape
    dt = x.dtype.type
    split_range(_batch_stats, channels, 2 * x.size, x, dt(1.0 / (n_img * spatial)), dt(1),
                mean, var)


def nv_batch_stats(x, mean, var):
    """Batch mean and biased variance (sum, then scale) into mean, var (C,)."""
    n_img, channels, spatial = x.shape
    dt = x.dtype.type
    split_range(_batch_stats, channels, 2 * x.size, x, dt(1), dt(1.0 / (n_img * spatial)),
                mean, var)


def bvlc_global_stats(blob_mean, blob_var, blob_factor, mean, var):
    dt = blob_mean.dtype.type
    f = blob_factor[0]
    scale = dt(0) if f == 0 else dt(1) / f
    np.multiply(blob_mean, scale, out=mean)
    np.multiply(blob_var, scale, out=var)


@kernel(nogil=True)
def _running_and_std(blob0, blob1, blob2, mean, var, maf, correction, eps, std):
    blob2[0] = blob2[0] * maf + blob2.dtype.type(1)
    for c in range(mean.size):
        blob0[c] = blob0[c] * maf + mean[c]
        blob1[c] = blob1[c] * maf + correction * var[c]
        std[c] = np.sqrt(var[c] + eps)


def bvlc_running_and_std(blobs, mean, var, maf, m, eps):
    """The running statistics' update, blob2 = blob2 * maf + 1, blob0 = blob0 * maf + mean,
    blob1 = blob1 * maf + m/(m-1) var (1 for m == 1), and std = sqrt(var + eps), returned:
    one kernel where five NumPy passes over vectors of a few hundred values cost more than
    their arithmetic (35 us of miniVggNet's batch-1 forward). The same float32 operations."""
    dt = mean.dtype.type
    correction = dt(m) / dt(m - 1) if m > 1 else dt(1)
    std = np.empty_like(var)
    _running_and_std(blobs[0], blobs[1], blobs[2], mean, var, dt(maf), correction, dt(eps), std)
    return std


def bvlc_std(var, eps):
    return np.sqrt(var + var.dtype.type(eps))


def nv_inv_std(var, eps):
    dt = var.dtype.type
    return np.power(var + dt(eps), dt(-0.5))


# --- normalisation ----------------------------------------------------------------------------
@njit(inline="always")
def normalized_value(x, mean, f, divide):
    """(x - mean) / std (BVLC, f = std) or (x - mean) * inv_std (NVCaffe, f = inv_std)."""
    d = x - mean
    return d / f if divide else d * f


@njit(inline="always")
def _normalize_by_value(x, mean, std, inv_std, scale, bias, y, x_norm, relu, slope, lo, hi):
    """The normalisations below for one value per (image, channel) (BatchNorm after
    InnerProduct; x_norm empty: not kept; y may be x): the loop runs along the channels,
    since a loop per (image, channel) pays its setup for one value (1.7 ms on miniVggNet's
    bn5, 128 x 512). The same values: the element's formula is the rows' own."""
    divide = inv_std.size == 0
    affine = scale.size > 0
    keep = x_norm.size > 0
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            v = normalized_value(x[o, c, 0], mean[c], std[c] if divide else inv_std[c], divide)
            if keep:
                x_norm[o, c, 0] = v
            if affine:
                v = v * scale[c] + bias[c]
            y[o, c, 0] = _leaky(v, zero, slope) if relu else v


@njit(inline="always")
def _top_value(v, s, b, affine, relu, zero, slope):
    """A normalised value's top: v * s + b when affine, then ReLU's forward with relu."""
    return relu_value(v * s + b if affine else v, relu, zero, slope)


@kernel(nogil=True)
def _normalize(x, mean, std, inv_std, scale, bias, y, x_norm, relu, slope, lo, hi):
    """x_norm = (x - mean) / std (BVLC; inv_std empty) or (x - mean) * inv_std (NVCaffe);
    y = x_norm, then y * scale + bias when scale is given; then, with relu, ReLU's forward
    of y (negative slope `slope`)."""
    if x.shape[2] == 1:
        _normalize_by_value(x, mean, std, inv_std, scale, bias, y, x_norm, relu, slope, lo, hi)
        return
    divide = inv_std.size == 0
    affine = scale.size > 0
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            m = mean[c]
            f = std[c] if divide else inv_std[c]
            s = scale[c] if affine else f
            b = bias[c] if affine else f
            xr, yr, nr = x[o, c], y[o, c], x_norm[o, c]
            for i in range(xr.size):
                v = normalized_value(xr[i], m, f, divide)
                nr[i] = v
                yr[i] = _top_value(v, s, b, affine, relu, zero, slope)


@kernel(nogil=True)
def _normalize_to(x, mean, std, inv_std, scale, bias, y, relu, slope, lo, hi):
    """_normalize without x_norm (y not overlapping x): y = (x - mean) / std or
    (x - mean) * inv_std, then * scale + bias when scale is given; then ReLU's forward."""
    if x.shape[2] == 1:
        _normalize_by_value(x, mean, std, inv_std, scale, bias, y, y[:0], relu, slope, lo, hi)
        return
    divide = inv_std.size == 0
    affine = scale.size > 0
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            m = mean[c]
            f = std[c] if divide else inv_std[c]
            s = scale[c] if affine else f
            b = bias[c] if affine else f
            xr, yr = x[o, c], y[o, c]
            for i in range(xr.size):
                v = normalized_value(xr[i], m, f, divide)
                yr[i] = _top_value(v, s, b, affine, relu, zero, slope)


@kernel(nogil=True)
def _normalize_in_place(x, mean, std, inv_std, scale, bias, relu, slope, lo, hi):
    """_normalize_to with y = x: one array, so the loop vectorizes."""
    if x.shape[2] == 1:
        _normalize_by_value(x, mean, std, inv_std, scale, bias, x, x[:0], relu, slope, lo, hi)
        return
    divide = inv_std.size == 0
    affine = scale.size > 0
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            m = mean[c]
            f = std[c] if divide else inv_std[c]
            s = scale[c] if affine else f
            b = bias[c] if affine else f
            xr = x[o, c]
            for i in range(xr.size):
                v = normalized_value(xr[i], m, f, divide)
                xr[i] = _top_value(v, s, b, affine, relu, zero, slope)


def bvlc_normalize_global(x, mean, std, top, relu_slope=None):
    """top = (x - mean) / std, no x_norm kept: with stored statistics (whose backward needs
    none), or where the top itself serves as x_norm; top may be x. relu_slope: a fused
    ReLU's negative slope (None: none)."""
    dt = x.dtype
    _normalize_any(x, mean, std, _empty(dt), _empty(dt), _empty(dt), top, None, relu_slope)


@kernel(nogil=True)
def _normalize_keep_in_place(x, mean, std, inv_std, scale, bias, x_norm, relu, slope, lo, hi):
    """_normalize with y = x: x is read and written as one array, x_norm is another, so
    the loop vectorizes (an aliased y takes the scalar loop). A separate kernel rather than
    an in_place branch of _normalize: merged, the in-place NVCaffe normalisation of
    8 x 32 x 112 x 112 values took 1.22 ms instead of 0.67 (LLVM vectorized it worse)."""
    if x.shape[2] == 1:
        _normalize_by_value(x, mean, std, inv_std, scale, bias, x, x_norm, relu, slope, lo, hi)
        return
    divide = inv_std.size == 0
    affine = scale.size > 0
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            m = mean[c]
            f = std[c] if divide else inv_std[c]
            s = scale[c] if affine else f
            b = bias[c] if affine else f
            xr, nr = x[o, c], x_norm[o, c]
            for i in range(xr.size):
                v = normalized_value(xr[i], m, f, divide)
                nr[i] = v
                xr[i] = _top_value(v, s, b, affine, relu, zero, slope)


@kernel(nogil=True)
def _normalize_scale(x, mean, std, y, s, b, z, relu, slope, r, apart, lo, hi):
    """BatchNorm (BVLC) and the Scale layer that reads its top, in one pass: y = (x - mean)
    / std; z = y * s (+ b; b may be empty); with relu, r = ReLU's forward of z (r may be z:
    the ReLU in place). Each value is the separate layers' own formula; the pass saves
    Scale's and ReLU's reads of their inputs. y, z and r are separate arrays (apart), or r
    is z."""
    has_bias = b.size > 0
    apart = relu and apart
    zero = x.dtype.type(0)
    if x.shape[2] == 1:         # one value per (image, channel): along the channels
        for o in range(x.shape[0]):
            for c in range(lo, hi):
                v = (x[o, c, 0] - mean[c]) / std[c]
                y[o, c, 0] = v
                scale_value_to(v, s, b, has_bias, z, r, o, c, relu, apart, slope)
        return
    for o in range(x.shape[0]):
        for c in range(lo, hi):
            m, f, sc = mean[c], std[c], s[c]
            bc = b[c] if has_bias else zero
            xr, yr, zr = x[o, c], y[o, c], z[o, c]
            if apart:
                rr = r[o, c]
                if has_bias:
                    for i in range(xr.size):
                        v = (xr[i] - m) / f
                        yr[i] = v
                        w = v * sc + bc
                        zr[i] = w
                        rr[i] = _leaky(w, zero, slope)
                else:
                    for i in range(xr.size):
                        v = (xr[i] - m) / f
                        yr[i] = v
                        w = v * sc
                        zr[i] = w
                        rr[i] = _leaky(w, zero, slope)
            elif has_bias:
                for i in range(xr.size):
                    v = (xr[i] - m) / f
                    yr[i] = v
                    zr[i] = _top_value(v, sc, bc, True, relu, zero, slope)
            else:
                for i in range(xr.size):
                    v = (xr[i] - m) / f
                    yr[i] = v
                    zr[i] = relu_value(v * sc, relu, zero, slope)


def bvlc_normalize_scale(x, mean, std, top, scale, bias, scale_top, relu_slope=None,
                         relu_top=None):
    """top = (x - mean) / std and a following Scale layer's scale_top = top * scale (+ bias,
    may be empty), in one pass; then a fused ReLU's forward (relu_slope; None: none) on
    scale_top in place, or into relu_top. No x_norm: the top serves (Net's kept tops)."""
    relu, slope = relu_args(relu_slope, x.dtype)
    r = scale_top if relu_top is None else relu_top
    split_range(_normalize_scale, x.shape[1], 4 * x.size, x, mean, std, top, scale, bias,
                scale_top, relu, slope, r, relu_top is not None, parallel_min=STREAMING_MIN)


def split_images(kernel, work, args, images_at):
    """kernel(*args, lo, hi) over the channels as split_range runs it, but with at least as
    many images as threads each thread normalizes whole images (args[i] for i in images_at
    sliced along the images, all channels): those that the convolutions around it split the
    same way, so a core reads the values its own cache holds: MobileNet's TEST forward at
    batch 8 (NVCaffe BatchNorms in place between depthwise and pointwise layers, which
    split by image) 2-4% faster, its training step and JacintoNet11's the same. The same
    sums either way."""
    x = args[0]
    n, channels = x.shape[0], x.shape[1]
    workers = threads.get_num_threads()
    if n < workers or workers < 2 or work < neuron.STREAMING_MIN:
        split_range(kernel, channels, work, *args, parallel_min=neuron.STREAMING_MIN)
        return
    bounds = [n * i // workers for i in range(workers + 1)]
    threads.run_parallel(kernel, [
        tuple(a[lo:hi] if i in images_at else a for i, a in enumerate(args)) + (0, channels)
        for lo, hi in zip(bounds[:-1], bounds[1:])])


def _normalize_any(x, mean, std, inv_std, scale, bias, top, x_norm, relu_slope):
    """The normalisation into top (which may be x), keeping x_norm unless it is None."""
    relu = relu_args(relu_slope, x.dtype)
    in_place = same_buffer(x, top)
    if x_norm is None:
        if in_place:
            split_images(_normalize_in_place, 2 * x.size,
                          (top, mean, std, inv_std, scale, bias, *relu), (0,))
        else:
            split_images(_normalize_to, 2 * x.size,
                          (x, mean, std, inv_std, scale, bias, top, *relu), (0, 6))
    elif in_place:
        split_images(_normalize_keep_in_place, 3 * x.size,
                      (top, mean, std, inv_std, scale, bias, x_norm, *relu), (0, 6))
    else:
        split_images(_normalize, 3 * x.size,
                      (x, mean, std, inv_std, scale, bias, top, x_norm, *relu), (0, 6, 7))


def bvlc_normalize(x, mean, std, top, x_norm, relu_slope=None):
    """x_norm = top = (x - mean) / std; top may be x; then a fused ReLU on top."""
    dt = x.dtype
    _normalize_any(x, mean, std, _empty(dt), _empty(dt), _empty(dt), top, x_norm, relu_slope)


def nv_normalize(x, mean, inv_std, scale, bias, top, x_norm, relu_slope=None):
    """x_norm = (x - mean) * inv_std; top = x_norm * scale + bias (scale, bias may be
    empty: top = x_norm); top may be x; then a fused ReLU on top. x_norm None: not kept
    (a forward that no backward follows)."""
    _normalize_any(x, mean, _empty(x.dtype), inv_std, scale, bias, top, x_norm, relu_slope)


# --- backward ---------------------------------------------------------------------------------
@kernel(nogil=True, fastmath={"reassoc"})
def _row_grad_sums(g, xn, s, affine):
    """One row's (sum g * y, sum g, sum (g * s) * y, sum g * s) in one pass (the last two
    0 without affine): the same terms as four separate row sums, summed in one loop."""
    zero = g.dtype.type(0)
    t0, t1, t2, t3 = zero, zero, zero, zero
    if affine:
        for i in range(g.size):
            gi = g[i]
            yi = xn[i]
            gs = gi * s
            t0 += gi * yi
            t1 += gi
            t2 += gs * yi
            t3 += gs
    else:
        for i in range(g.size):
            gi = g[i]
            t0 += gi * xn[i]
            t1 += gi
    return t0, t1, t2, t3


@kernel(nogil=True)
def _grad_sums_by_row(dy, x_norm, scale, sums, affine, lo, hi):
    """_grad_sums for one value per (image, channel) (BatchNorm after InnerProduct): the
    loop runs along the channels, since a loop per (image, channel) pays its setup for one
    value (2.9 ms on miniVggNet's bn5, 128 x 512). The same sums in the same order."""
    zero = dy.dtype.type(0)
    for k in range(sums.shape[0]):
        for c in range(lo, hi):
            sums[k, c] = zero
    for o in range(dy.shape[0]):
        for c in range(lo, hi):
            g = dy[o, c, 0]
            y = x_norm[o, c, 0]
            sums[0, c] += g * y
            sums[1, c] += g
            if affine:
                gs = g * scale[c]
                sums[2, c] += gs * y
                sums[3, c] += gs


@kernel(nogil=True)
def _grad_sums(dy, x_norm, scale, sums, lo, hi):
    """sums[0] = sum dy * y, sums[1] = sum dy; with a scale also sums[2] = sum g * y and
    sums[3] = sum g for g = dy * scale (NVCaffe's scale/bias gradients, then its x_hat
    gradient)."""
    zero = dy.dtype.type(0)
    affine = scale.size > 0
    if dy.shape[2] == 1:
        _grad_sums_by_row(dy, x_norm, scale, sums, affine, lo, hi)
        return
    for c in range(lo, hi):
        t0 = zero
        t1 = zero
        t2 = zero
        t3 = zero
        s = scale[c] if affine else zero
        for o in range(dy.shape[0]):
            r0, r1, r2, r3 = _row_grad_sums(dy[o, c], x_norm[o, c], s, affine)
            t0 += r0
            t1 += r1
            t2 += r2
            t3 += r3
        sums[0, c] = t0
        sums[1, c] = t1
        if affine:
            sums[2, c] = t2
            sums[3, c] = t3


@njit(inline="always")
def _bvlc_dx(a, b, k, s, xn, g):
    t = a * xn
    t = t + b
    t = t * k
    t = t + g
    return t / s


@kernel(nogil=True)
def _bvlc_backward(x_norm, dy, std, sum_dy_y, sum_dy, k, dx, in_place, lo, hi):
    """dx = ((sum_dy_y * y + sum_dy) * k + dy) / std, k = -1/(N S); with in_place (dx is
    dy) the loop reads and writes dy alone, so it vectorizes."""
    if dy.shape[2] == 1:        # one value per (image, channel): along the channels
        for o in range(dy.shape[0]):
            for c in range(lo, hi):
                dx[o, c, 0] = _bvlc_dx(sum_dy_y[c], sum_dy[c], k, std[c], x_norm[o, c, 0],
                                       dy[o, c, 0])
        return
    for o in range(dy.shape[0]):
        for c in range(lo, hi):
            a, b, s = sum_dy_y[c], sum_dy[c], std[c]
            xr, gr, dr = x_norm[o, c], dy[o, c], dx[o, c]
            if in_place:
                for i in range(xr.size):
                    gr[i] = _bvlc_dx(a, b, k, s, xr[i], gr[i])
            else:
                for i in range(xr.size):
                    dr[i] = _bvlc_dx(a, b, k, s, xr[i], gr[i])


@kernel(nogil=True)
def _divide(dy, std, dx, in_place, lo, hi):
    """dx = dy / std (in_place: dx is dy)."""
    if dy.shape[2] == 1:        # one value per (image, channel): along the channels
        for o in range(dy.shape[0]):
            for c in range(lo, hi):
                dx[o, c, 0] = dy[o, c, 0] / std[c]
        return
    for o in range(dy.shape[0]):
        for c in range(lo, hi):
            s = std[c]
            gr, dr = dy[o, c], dx[o, c]
            if in_place:
                for i in range(gr.size):
                    gr[i] = gr[i] / s
            else:
                for i in range(gr.size):
                    dr[i] = gr[i] / s


def bvlc_backward(x_norm, top_diff, std, use_global_stats, bottom_diff):
    """x_norm is not read with use_global_stats (None may be passed)."""
    in_place = same_buffer(top_diff, bottom_diff)
    if use_global_stats:
        split_range(_divide, top_diff.shape[1], 2 * top_diff.size, top_diff, std,
                    bottom_diff, in_place, parallel_min=STREAMING_MIN)
        return
    n_img, channels, spatial = x_norm.shape
    dt = x_norm.dtype.type
    sums = np.empty((2, channels), x_norm.dtype)
    split_range(_grad_sums, channels, 2 * x_norm.size, top_diff, x_norm, _empty(dt), sums)
    split_range(_bvlc_backward, channels, 3 * x_norm.size, x_norm, top_diff, std, sums[0],
                sums[1], dt(-1.0 / (n_img * spatial)), bottom_diff, in_place,
                parallel_min=STREAMING_MIN)


@njit(inline="always")
def _nv_dx(dy, affine, s, a, b, f, xn):
    g = dy * s if affine else dy
    t = a * xn
    t = t + b
    return (g - t) * f


@kernel(nogil=True)
def _nv_backward(x_norm, dy, scale, inv_std, mean_dy_y, mean_dy, dx, in_place, lo, hi):
    """dx = (g - (mean_dy_y * y + mean_dy)) * inv_std, g = dy (* scale); in_place: dx is
    dy (one array, so the loop vectorizes)."""
    affine = scale.size > 0
    if dy.shape[2] == 1:        # one value per (image, channel): along the channels
        for o in range(dy.shape[0]):
            for c in range(lo, hi):
                f = inv_std[c]
                dx[o, c, 0] = _nv_dx(dy[o, c, 0], affine, scale[c] if affine else f,
                                     mean_dy_y[c], mean_dy[c], f, x_norm[o, c, 0])
        return
    for o in range(dy.shape[0]):
        for c in range(lo, hi):
            a, b, f = mean_dy_y[c], mean_dy[c], inv_std[c]
            s = scale[c] if affine else f
            xr, gr, dr = x_norm[o, c], dy[o, c], dx[o, c]
            if in_place:
                for i in range(xr.size):
                    gr[i] = _nv_dx(gr[i], affine, s, a, b, f, xr[i])
            else:
                for i in range(xr.size):
                    dr[i] = _nv_dx(gr[i], affine, s, a, b, f, xr[i])


def nv_backward(x_norm, top_diff, scale, inv_std, bottom_diff):
    """NVCaffe's backward for top_diff through `scale` (may be empty: none) and the
    normalisation; bottom_diff may alias top_diff. Returns sums (2, C): sum dy * x_norm and
    sum dy, the scale and bias gradients."""
    n_img, channels, spatial = x_norm.shape
    dt = x_norm.dtype.type
    affine = scale.size > 0
    sums = np.empty((4 if affine else 2, channels), x_norm.dtype)
    split_range(_grad_sums, channels, 2 * x_norm.size, top_diff, x_norm, scale, sums)
    inv = dt(1.0 / (n_img * spatial))
    g_sums = sums[2:] if affine else sums
    mean_dy_y = g_sums[0] * inv
    mean_dy = g_sums[1] * inv
    split_range(_nv_backward, channels, 3 * x_norm.size, x_norm, top_diff, scale, inv_std,
                mean_dy_y, mean_dy, bottom_diff, same_buffer(top_diff, bottom_diff),
                parallel_min=STREAMING_MIN)
    return sums[:2]
