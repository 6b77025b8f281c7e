"""Element-wise neuron kernels: Caffe's neuron layers' CPU loops over flat arrays.

Every function takes flat, C-contiguous arrays of one float dtype (float32 or float64) and
writes its result into `out`; `out` may alias an input (in-place layers), since each element
is read before it is written. Scalars (slopes, scales, ...) must come in the array's dtype,
as Caffe's `Dtype` members do.

The arithmetic mirrors the C++ expressions' types, so float32 results match Caffe bit for bit
(checked against the golden blobs): unqualified `exp`/`log`/`tanh`/`pow` on a float call the
float versions (`expf`, ...; Numba's `math` functions do the same for float32), while a double
literal (`0.5 * x`, `1. + v`) promotes the rest of the expression to double, which happens
here too because Python float literals are float64. Integer literals in Caffe become `Dtype`
constants here (`x.dtype.type`), since Numba would promote `float32 + int` to float64 where
C++ keeps float.
"""
import math

import numpy as np
from numba import njit

from .. import threads
from .jit import kernel

#: arrays at least this long are split over threads (each element is independent, so the
#: result is the same bit for bit); the kernels release the GIL. A fork/join of the pool
#: costs 0.08-0.1 ms on these VMs: from 1<<17 to 1<<20, batch-1 TEST forwards got 5-15%
#: faster (mobilenet-0.5 8.6 -> 7.3 ms) and training steps stayed the same
PARALLEL_MIN = 1 << 20
#: the same for kernels that stream memory with a few operations per element (ReLU, a
#: BatchNorm with stored statistics). It was 1 << 22 while every parallel call woke a
#: sleeping worker (about 0.1 ms); now that the pool's worker polls between the calls of a
#: pass (threads.SPIN_SECONDS), 1 << 18 made mobilenet-0.5's TEST forward at batch 8 17%
#: faster (64.8 -> 53-55 ms) and miniVggNet's at 128 10% (66 -> 59-61 ms); 1 << 17 was
#: no faster, nor was PARALLEL_MIN at 1 << 18
STREAMING_MIN = 1 << 18


def elementwise(kernel, *args, parallel_min=None):
    """Call `kernel(*args)`, chunked over caffe-lite's threads when the arrays have at least
    `parallel_min` elements (None: PARALLEL_MIN).

    Arrays as long as the longest one are sliced; other arguments are passed as they are.
    """
    n = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
    workers = threads.get_num_threads()
    if n < (PARALLEL_MIN if parallel_min is None else parallel_min) or workers < 2:
        kernel(*args)
        return
    bounds = [n * i // workers for i in range(workers + 1)]
    threads.run_parallel(kernel, [
        [a[lo:hi] if isinstance(a, np.ndarray) and a.size == n else a for a in args]
        for lo, hi in zip(bounds[:-1], bounds[1:])])


def split_range(kernel, total, work, *args, parallel_min=None):
    """Call `kernel(*args, lo, hi)` over [0, total) in contiguous ranges, one per thread,
    when `work` (elements touched) reaches `parallel_min` (None: PARALLEL_MIN); else once
    over everything.

    `kernel` must be a nogil Numba function whose ranges write disjoint outputs. Plain
    threads (threads.run_parallel) rather than Numba's parallel=True: they never enter
    Numba's threading layer, so a kernel may run here while another thread (the Data
    layer's prefetch) is inside Numba code, and no OpenMP team spins after the call.
    """
    workers = min(threads.get_num_threads(), total)
    if work < (PARALLEL_MIN if parallel_min is None else parallel_min) or workers < 2:
        kernel(*args, 0, total)
        return
    bounds = [total * i // workers for i in range(workers + 1)]
    threads.run_parallel(kernel, [(*args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])])


# --- ReLU: y = max(x, 0) + negative_slope * min(x, 0) ---------------------------------------
@njit(inline="always")
def _leaky(v, zero, slope):
    hi = zero if v < zero else v          # std::max(v, 0)
    lo = zero if zero < v else v          # std::min(v, 0)
    return hi + slope * lo


@njit(inline="always")
def relu_value(v, relu, zero, slope):
    """ReLU's forward of v with relu, else v: a fused ReLU applied in the loop that writes
    the value, rather than in a second pass over the row (1.2-2x faster, the same bits)."""
    return _leaky(v, zero, slope) if relu else v


@njit(inline="always")
def leaky_row(row, slope):
    """row = ReLU's forward of row, in place: the in-place ReLU kernel, and a ReLU that Net
    fused into the layer before it, applied by that layer row by row while it is in cache."""
    zero = row.dtype.type(0)
    for i in range(row.size):
        row[i] = _leaky(row[i], zero, slope)


def relu_args(slope, dtype):
    """(relu, slope) as the kernels that apply a fused ReLU take them, for its negative
    slope (None: no ReLU)."""
    return slope is not None, dtype.type(0 if slope is None else slope)


@njit(inline="always")
def _leaky_gate(v, zero, one, slope):
    # (x > 0) + slope * (x <= 0): both gates are 0 for a NaN input, as in C++
    pos = one if v > zero else zero
    neg = one if v <= zero else zero
    return pos + slope * neg


@kernel(nogil=True)
def relu_forward(x, negative_slope, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = _leaky(x[i], zero, negative_slope)


def same_buffer(a, b):
    """Whether two arrays are one buffer (an in-place layer's bottom and top).

    A kernel whose output may alias its input compiles to a vector loop guarded by a
    run-time overlap check and a scalar loop; an in-place call always takes the scalar one
    (4x slower for ReLU). The in-place kernels read and write one array instead."""
    return a.size == b.size and a.ctypes.data == b.ctypes.data


@kernel(nogil=True)
def relu_forward_in_place(x, negative_slope):
    leaky_row(x, negative_slope)


@kernel(nogil=True)
def relu_backward_in_place(x, diff, negative_slope):
    """diff = diff * gate(x): relu_backward with out = top_diff."""
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        diff[i] = diff[i] * _leaky_gate(x[i], zero, one, negative_slope)


@kernel(nogil=True)
def relu_backward(x, top_diff, negative_slope, out):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        out[i] = top_diff[i] * _leaky_gate(x[i], zero, one, negative_slope)


# --- PReLU: y = max(x, 0) + a_c * min(x, 0) ---------------------------------------------------
@kernel(nogil=True)
def prelu_forward(x, slope, channels, dim, div_factor, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        c = (i // dim) % channels // div_factor
        out[i] = _leaky(x[i], zero, slope[c])


@kernel(nogil=True)
def prelu_backward_slope(x, top_diff, channels, dim, div_factor, slope_diff):
    """slope_diff[c] += sum of top_diff * x over x <= 0 (accumulated in Caffe's order)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        c = (i // dim) % channels // div_factor
        v = x[i]
        slope_diff[c] += top_diff[i] * v * (one if v <= zero else zero)


@kernel(nogil=True)
def prelu_backward(x, top_diff, slope, channels, dim, div_factor, out):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        c = (i // dim) % channels // div_factor
        out[i] = top_diff[i] * _leaky_gate(x[i], zero, one, slope[c])


# --- ELU: y = max(x, 0) + alpha * (exp(min(x, 0)) - 1) ----------------------------------------
@kernel(nogil=True)
def elu_forward(x, alpha, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        hi = zero if v < zero else v
        lo = zero if zero < v else v
        out[i] = hi + alpha * (math.exp(lo) - one)


@kernel(nogil=True)
def elu_backward(x, y, top_diff, alpha, out):
    """dy/dx = 1 for x > 0, else alpha + y (reads y, so in place x is y: fine for alpha > 0)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        pos = one if v > zero else zero
        neg = one if v <= zero else zero
        out[i] = top_diff[i] * (pos + (alpha + y[i]) * neg)


# --- Sigmoid: y = 0.5 * tanh(0.5 x) + 0.5 (Caffe 1.0's form, computed in double) -------------
@kernel(nogil=True)
def sigmoid_forward(x, out):
    for i in range(x.size):
        out[i] = 0.5 * math.tanh(0.5 * x[i]) + 0.5


@kernel(nogil=True)
def sigmoid_backward(y, top_diff, out):
    for i in range(y.size):
        s = y[i]
        out[i] = top_diff[i] * s * (1. - s)


# --- TanH ---------------------------------------------------------------------------------------
@kernel(nogil=True)
def tanh_forward(x, out):
    for i in range(x.size):
        out[i] = math.tanh(x[i])


@kernel(nogil=True)
def tanh_backward(y, top_diff, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        t = y[i]
        out[i] = top_diff[i] * (one - t * t)


# --- AbsVal: y = |x|, dy/dx = sign(x) -----------------------------------------------------------
@kernel(nogil=True)
def absval_forward(x, out):
    for i in range(x.size):
        out[i] = abs(x[i])


@kernel(nogil=True)
def absval_backward(x, top_diff, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        sign = one if v > zero else (-one if v < zero else zero)
        out[i] = sign * top_diff[i]


# --- Power: y = (shift + scale * x) ^ power -------------------------------------------------------
@kernel(nogil=True)
def power_forward(x, power, scale, shift, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    if power * scale == zero:
        # the input does not matter: scale or power is 0
        value = one if power == zero else math.pow(shift, power)
        for i in range(x.size):
            out[i] = value
        return
    for i in range(x.size):
        v = x[i]
        if scale != one:
            v = v * scale
        if shift != zero:
            v = v + shift
        if power != one:
            v = math.pow(v, power)
        out[i] = v


@kernel(nogil=True)
def power_backward(x, y, top_diff, power, scale, shift, out):
    """Caffe's cases: dy/dx = diff_scale * y / (shift + scale * x), diff_scale = power * scale."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    two = x.dtype.type(2)
    diff_scale = power * scale
    if diff_scale == zero:
        for i in range(x.size):
            out[i] = diff_scale
        return
    if power == one:
        for i in range(x.size):
            out[i] = top_diff[i] * diff_scale
        return
    for i in range(x.size):
        if power == two:
            # 2 * scale * (shift + scale * x), as diff_scale * shift + diff_scale * scale * x
            g = (diff_scale * scale) * x[i]
            if shift != zero:
                g = g + diff_scale * shift
        elif shift == zero:
            # power * y / x
            g = y[i] / x[i]
            g = g * power
        else:
            v = x[i]
            if scale != one:
                v = v * scale
            v = v + shift
            g = y[i] / v
            if diff_scale != one:
                g = g * diff_scale
        out[i] = top_diff[i] * g


# --- Exp: y = base ^ (shift + scale * x) = outer_scale * exp(inner_scale * x) ---------------------
@kernel(nogil=True)
def exp_forward(x, inner_scale, outer_scale, out):
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        if inner_scale != one:
            v = inner_scale * v
        v = math.exp(v)
        if outer_scale != one:
            v = v * outer_scale
        out[i] = v


@kernel(nogil=True)
def exp_backward(y, top_diff, inner_scale, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        g = y[i] * top_diff[i]
        if inner_scale != one:
            g = g * inner_scale
        out[i] = g


# --- Log: y = log_base(shift + scale * x) = base_scale * log(shift + scale * x) -------------------
@kernel(nogil=True)
def log_forward(x, scale, shift, base_scale, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        if scale != one:
            v = v * scale
        if shift != zero:
            v = v + shift
        v = math.log(v)
        if base_scale != one:
            v = v * base_scale
        out[i] = v


@kernel(nogil=True)
def log_backward(x, top_diff, scale, shift, backward_num_scale, out):
    """dy/dx = (scale / log(base)) / (shift + scale * x), Caffe's powx(v, -1) included."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        v = x[i]
        if scale != one:
            v = v * scale
        if shift != zero:
            v = v + shift
        v = math.pow(v, -one)
        if backward_num_scale != one:
            v = v * backward_num_scale
        out[i] = top_diff[i] * v


# --- BNLL: y = log(1 + exp(x)), computed stably -------------------------------------------------
#: Caffe's kBNLL_THRESHOLD: backward clamps x before exp so the ratio stays finite
BNLL_THRESHOLD = 50.0


@kernel(nogil=True)
def bnll_forward(x, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        if v > zero:
            out[i] = v + math.log(1. + math.exp(-v))
        else:
            out[i] = math.log(1. + math.exp(v))


@kernel(nogil=True)
def bnll_backward(x, top_diff, out):
    threshold = x.dtype.type(BNLL_THRESHOLD)
    for i in range(x.size):
        v = x[i]
        expval = math.exp(threshold if threshold < v else v)
        out[i] = top_diff[i] * expval / (expval + 1.)


# --- Threshold: y = x > threshold ? 1 : 0 ------------------------------------------------------
@kernel(nogil=True)
def threshold_forward(x, threshold, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in range(x.size):
        out[i] = one if x[i] > threshold else zero


# --- scalar math as C++ does it on a Dtype (float: logf, expf, powf), for layer set-up ---------
@kernel
def scalar_log(v):
    return math.log(v)


@kernel
def scalar_exp(v):
    return math.exp(v)


@kernel
def scalar_pow(v, p):
    return math.pow(v, p)
