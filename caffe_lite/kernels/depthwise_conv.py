"""Depthwise convolution (group == input channels: MobileNet's and JacintoNet's 3x3 layers)
as direct loops over each plane, forward and backward.

Lowering serves these layers badly: each channel's product is (m, kh*kw) x (kh*kw, P*n), a
GEMM with an inner dimension of 9 and m (the channel multiplier, usually 1) rows, so the
lowered path spends its time in im2col and in a GEMM per channel that BLAS cannot make
fast. Here each output plane (image n, output channel o of input channel c = o // m) is
accumulated tap by tap from the input plane:

    y[n, o, oh, ow] = sum over (ki, kj) of w[o, ki, kj] * x[n, c, oh*sh - ph + ki*dh,
                                                                ow*sw - pw + kj*dw]   (+ b[o])

For each tap the output columns whose input column falls inside the image form one range,
found once per tap, so the innermost loop has no test. At stride 1 the loops run instead on
a padded copy of the plane and an output on its padded width (OH rows of W + 2*pw, the
columns past OW thrown away): then each tap is one pass of OH*(W + 2*pw) contiguous
multiply-adds. Row by row, MobileNet's 14x14 and 7x7 planes gave rows shorter than one
16-float vector, which LLVM ran as scalar code (9 GFLOP/s on 14x14 planes at batch 8). At
strides up to 3 the forward runs the same way on the padded plane split into its stride x
stride phases (_forward_phases), the row loops above past that. The
data gradient scatters the same products back into the input plane's phases, tap by tap in
one contiguous pass each (planes of different input channels are disjoint, so images x
channels split over threads freely); the weight and bias gradients sum, per output channel,
over the batch in float64, each tap one contiguous sum against its phase (each output
channel's sums are one thread's, so no two threads write one weight). The gradients run on
phases at every stride up to PHASES_MAX phases (one phase at stride 1).

At stride 1 with one output per input channel, the data gradient is instead the forward of
dy with the kernel rotated 180 degrees (pad d*(k-1) - p: kernels/conv.py's flipped path), so
it runs on the forward's loops, nine taps in one pass on large planes.

Summation order: the forward sums taps in (ki, kj) order and adds the bias last, as Caffe's
GEMM over K = (c, ki, kj) then its bias pass; the rotated kernel's data gradient sums a
pixel's taps in the reverse order (float32 rounding of kh*kw terms either way); the
gradients' sums over the batch are in float64 rather than the lowered path's float32 GEMM
(more exact, equal to float32 rounding).
"""
import numpy as np
from numba import njit, uint64 as U

from .channel_epilogue import ChannelEpilogue, finish_run
from .jit import kernel
from .neuron import split_range


def is_depthwise(x, geo):
    """Does this convolution have one input channel per group (and a 4-d input)?"""
    return x.ndim == 4 and geo.group > 1 and x.shape[1] == geo.group


def depthwise_forward(x, w, bias, geo, y, epilogue=None):
    """y = depthwise conv(x, w) (+ bias): x (N, C, H, W), w (C*m, 1, kh, kw); then a
    ChannelEpilogue (None: none) on each plane as it is written."""
    n, m = y.shape[0], y.shape[1]
    w2 = _taps(w)
    b = np.empty(0, y.dtype) if bias is None else np.ascontiguousarray(bias, y.dtype)
    epi = ChannelEpilogue.none(y.dtype) if epilogue is None else epilogue.args
    out = y if y.flags.c_contiguous else np.empty(y.shape, y.dtype)
    kernel = (_forward_nine if _nine_pay(geo, x.shape[3], y.shape[2]) else
              _forward_padded if _on_padded_planes(geo) else
              _forward_phases if _on_phases(geo) else _forward_planes)
    split_range(kernel, n * m, y.size * w2.shape[1], _flat(x), w2, b, epi, out.reshape(-1),
                *_args(x, out, geo), parallel_min=FORWARD_PARALLEL_MIN)
    if out is not y:
        y[...] = out


def depthwise_backward(x, w, dy, geo, dx=None, dw=None, db=None):
    """dx overwritten; dw and db accumulated (Caffe's convention); None: not wanted."""
    w2 = _taps(w)
    args = _args(x, dy, geo)
    work = dy.size * w2.shape[1]
    if dw is not None or db is not None:
        sums = np.zeros((w2.shape[0], w2.shape[1] + 1), np.float64)
        kernel = (_weight_sums_nine if _nine_pay(geo, x.shape[3], dy.shape[2],
                                                 NINE_SUMS_MIN_VALUES) else
                  _weight_sums_phases if _on_phases(geo) else _weight_sums)
        split_range(kernel, w2.shape[0], work, _flat(x), _flat(dy), sums,
                    dw is not None, db is not None, *args)
        if dw is not None:
            dw += sums[:, :-1].reshape(dw.shape).astype(dw.dtype)
        if db is not None:
            db += sums[:, -1].astype(db.dtype)
    flipped = None if dx is None else _flipped_geometry(geo, x.shape[1], dy.shape[1])
    if flipped is not None:
        # the rotated kernel's forward of dy (kernels/conv.py's flipped path), on the
        # forward's loops: 16 x 112x112 at batch 8, two cores, 1.4 -> 0.6 ms
        depthwise_forward(dy, np.ascontiguousarray(w[:, :, ::-1, ::-1]), None, flipped, dx)
    elif dx is not None:
        grad = dx if dx.flags.c_contiguous else np.empty(dx.shape, dx.dtype)
        kernel = _data_phases if _on_phases(geo) else _data_planes
        split_range(kernel, dx.shape[0] * dx.shape[1], work, _flat(dy), w2,
                    grad.reshape(-1), *args)
        if grad is not dx:
            dx[...] = grad


def _on_padded_planes(geo):
    """Stride 1: the loops run on whole padded planes (module docstring)."""
    return geo.stride_h == 1 and geo.stride_w == 1


#: a strided forward runs on the padded plane's phases (_forward_phases) up to this many
#: phases: one core, batch 8, MobileNet's stride-2 layers, 112x112 planes 2.58 -> 1.72 ms,
#: 56x56 1.36 -> 0.77, 28x28 0.83 -> 0.43, 14x14 0.53 -> 0.35; stride 3 on 56x56 0.37 ->
#: 0.29; stride 4 (16 phases to fill) 0.89 -> 1.09, so it keeps the row loops
PHASES_MAX = 9


#: multiply-adds from which the forward splits over threads: below neuron.PARALLEL_MIN, as
#: each plane also pays its padding and output copies (MobileNet's 14x14 stride-2 layer at
#: batch 8, 0.9 M: 0.42 ms on one core); mobilenet-0.5's TEST forward at batch 1 5.81 ->
#: 5.59 ms at 1 << 18 against 1 << 20, at batch 8 the same; 1 << 17 another 1%
FORWARD_PARALLEL_MIN = 1 << 17


def _nine_pay(geo, width, out_h, least=None):
    """Whether a 3x3 filter on phases runs its nine taps in one pass (_forward_nine,
    _weight_sums_nine): with an output grid (out_h rows of a phase's width) of at least
    `least` values (the forward's NINE_MIN_VALUES by default)."""
    phase_width = -(-(width + 2 * geo.pad_w) // geo.stride_w)
    return (geo.kernel_h == 3 and geo.kernel_w == 3 and _on_phases(geo)
            and out_h * phase_width >= (NINE_MIN_VALUES if least is None else least))


def _flipped_geometry(geo, channels, outputs):
    """The geometry of the data gradient as a forward convolution of dy with the rotated
    kernel: stride 1, one output per channel, pad d*(k-1) - p within the kernel's extent;
    None where that does not hold."""
    pad_h = geo.dilation_h * (geo.kernel_h - 1) - geo.pad_h
    pad_w = geo.dilation_w * (geo.kernel_w - 1) - geo.pad_w
    if (geo.stride_h != 1 or geo.stride_w != 1 or channels != outputs or pad_h < 0
            or pad_w < 0):
        return None
    return geo._replace(pad_h=pad_h, pad_w=pad_w)


def _on_phases(geo):
    return geo.stride_h * geo.stride_w <= PHASES_MAX


def _taps(w):
    return np.ascontiguousarray(w).reshape(w.shape[0], -1)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _args(x, y, geo):
    """The shapes and geometry the loops take: channels in and out, input and output
    sides, then kernel, pad, stride and dilation."""
    return (x.shape[1], y.shape[1], x.shape[2], x.shape[3], y.shape[2], y.shape[3],
            geo.kernel_h, geo.kernel_w, geo.pad_h, geo.pad_w, geo.stride_h, geo.stride_w,
            geo.dilation_h, geo.dilation_w)


# The loops index flat arrays with unsigned integers (U): Numba's signed indices carry a
# wraparound test for negative values that keeps the innermost loops from vectorizing. A
# row's start may be "negative" before its first valid column is added; unsigned arithmetic
# wraps back to the right index.

@kernel(nogil=True)
def _columns(kj, dw, pw, sw, width, out_w):
    """(offset, first, stop): output columns [first, stop) read input column
    ow * sw + offset, inside [0, width)."""
    offset = kj * dw - pw
    first = 0 if offset >= 0 else (-offset + sw - 1) // sw
    last = width - 1 - offset
    stop = 0 if last < 0 else min(out_w, last // sw + 1)
    return offset, first, max(first, stop)


@kernel(nogil=True)
def _forward_planes(x, w, bias, epi, y, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw,
                    sh, sw, dh, dw, lo, hi):
    mult = cout // cin
    out_plane = out_h * out_w
    for plane in range(lo, hi):
        n = plane // cout
        o = plane % cout
        src = (n * cin + o // mult) * height * width
        dst = plane * out_plane
        for i in range(out_plane):
            y[U(dst + i)] = 0
        for ki in range(kh):
            for kj in range(kw):
                tap = w[o, ki * kw + kj]
                offset, first, stop = _columns(kj, dw, pw, sw, width, out_w)
                for oh in range(out_h):
                    ih = oh * sh - ph + ki * dh
                    if ih < 0 or ih >= height:
                        continue
                    row = U(src + ih * width + offset)
                    out = U(dst + oh * out_w)
                    if sw == 1:
                        for ow in range(first, stop):
                            y[out + U(ow)] += tap * x[row + U(ow)]
                    else:
                        for ow in range(first, stop):
                            y[out + U(ow)] += tap * x[row + U(ow * sw)]
        if bias.size:
            for i in range(out_plane):
                y[U(dst + i)] += bias[o]
        finish_run(y, dst, out_plane, o, epi)


@kernel(nogil=True)
def _data_planes(dy, w, dx, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw, sh, sw,
                 dh, dw, lo, hi):
    mult = cout // cin
    in_plane = height * width
    for plane in range(lo, hi):
        n = plane // cin
        c = plane % cin
        dst = plane * in_plane
        for i in range(in_plane):
            dx[U(dst + i)] = 0
        for o in range(c * mult, (c + 1) * mult):
            grad = (n * cout + o) * out_h * out_w
            for ki in range(kh):
                for kj in range(kw):
                    tap = w[o, ki * kw + kj]
                    offset, first, stop = _columns(kj, dw, pw, sw, width, out_w)
                    for oh in range(out_h):
                        ih = oh * sh - ph + ki * dh
                        if ih < 0 or ih >= height:
                            continue
                        row = U(dst + ih * width + offset)
                        src = U(grad + oh * out_w)
                        if sw == 1:
                            for ow in range(first, stop):
                                dx[row + U(ow)] += tap * dy[src + U(ow)]
                        else:
                            for ow in range(first, stop):
                                dx[row + U(ow * sw)] += tap * dy[src + U(ow)]


# reassoc: the float64 sums may be split into vector lanes (without it LLVM keeps one
# sequential sum, 10x slower); the order is fixed by the compiled code, not by the threads
@kernel(nogil=True, fastmath={"reassoc"})
def _weight_sums(x, dy, sums, want_w, want_b, cin, cout, height, width, out_h, out_w, kh, kw,
                 ph, pw, sh, sw, dh, dw, lo, hi):
    """sums[o, tap] = sum over n, oh, ow of dy * x at the tap; sums[o, -1] = sum of dy."""
    batch = x.size // (cin * height * width)
    mult = cout // cin
    out_plane = out_h * out_w
    for o in range(lo, hi):
        c = o // mult
        for n in range(batch):
            grad = (n * cout + o) * out_plane
            src = (n * cin + c) * height * width
            if want_b:
                total = 0.0
                for i in range(out_plane):
                    total += np.float64(dy[U(grad + i)])
                sums[o, kh * kw] += total
            if not want_w:
                continue
            for ki in range(kh):
                for kj in range(kw):
                    offset, first, stop = _columns(kj, dw, pw, sw, width, out_w)
                    total = 0.0
                    for oh in range(out_h):
                        ih = oh * sh - ph + ki * dh
                        if ih < 0 or ih >= height:
                            continue
                        row = U(src + ih * width + offset)
                        g = U(grad + oh * out_w)
                        if sw == 1:
                            for ow in range(first, stop):
                                total += np.float64(dy[g + U(ow)]) * np.float64(x[row + U(ow)])
                        else:
                            for ow in range(first, stop):
                                total += (np.float64(dy[g + U(ow)])
                                          * np.float64(x[row + U(ow * sw)]))
                    sums[o, ki * kw + kj] += total


# --- stride 1, on padded planes -----------------------------------------------------------
@kernel(nogil=True)
def _pad_plane(x, src, height, width, ph, pw, wp, padded):
    """padded[(y + ph) * wp + x + pw] = x[src + y * width + x]. Only the plane's pixels are
    written: the padding keeps the zeros that _plane_buffers made it."""
    for y in range(height):
        row = (y + ph) * wp + pw
        for i in range(width):
            padded[U(row + i)] = x[U(src + y * width + i)]


#: the forward's output grid holds a whole number of these values, so that no tap's pass
#: ends in scalar steps (a 7x7 plane's grid of 63: three 16-float vectors, then 15 steps).
#: Two cores, batch 8: MobileNet's 512 x 7x7 layer 0.23 -> 0.19 ms, its 256 x 14x14 stride
#: 2 one 0.22 -> 0.18; the larger planes the same
GRID_VALUES = 16


@njit(inline="always")
def _whole(size, unit):
    return -(-size // unit) * unit


@njit(inline="always")
def _plane_buffers(height, width, out_h, ph, pw, kw, dw, dtype, unit=1):
    """(wp, padded, grid): the padded width, a padded plane (with room for the last row's
    runs past it) and an output grid of out_h rows of wp, rounded up to a multiple of
    `unit` values."""
    wp = width + 2 * pw
    grid = _whole(out_h * wp, unit)
    return (wp, np.zeros((height + 2 * ph) * wp + (kw - 1) * dw + grid - out_h * wp, dtype),
            np.empty(grid, dtype))


@njit(inline="always")
def _tap_offset(ki, kj, kw, dh, dw, wp):
    return ki * dh * wp + kj * dw


#: a 3x3 filter's output grid of at least this many values is summed in one pass
#: (_grid_of_nine); smaller ones tap by tap, which ran 7x7 planes faster. Two cores, batch
#: 8, stride 1: 16 x 112x112 1.00 -> 0.55 ms, 64 x 56x56 0.70 -> 0.54
NINE_MIN_VALUES = 256


@kernel(nogil=True)
def _grid_of_nine(w, taps, source, grid):
    """grid = the sum over nine taps t of w[t] * source[taps[t]:][:grid.size], each value's
    nine products added in registers in tap order from 0 (the tap-by-tap passes' sums, bit
    for bit): one pass that reads nine vectors and writes one, where the passes read and
    wrote the grid nine times (a 112x112 plane's grid is 51 KB, past L1)."""
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = (U(taps[0]), U(taps[1]), U(taps[2]), U(taps[3]),
                                          U(taps[4]), U(taps[5]), U(taps[6]), U(taps[7]),
                                          U(taps[8]))
    zero = grid.dtype.type(0)
    for j in range(grid.size):
        i = U(j)
        v = zero + w0 * source[o0 + i]
        v = v + w1 * source[o1 + i]
        v = v + w2 * source[o2 + i]
        v = v + w3 * source[o3 + i]
        v = v + w4 * source[o4 + i]
        v = v + w5 * source[o5 + i]
        v = v + w6 * source[o6 + i]
        v = v + w7 * source[o7 + i]
        grid[i] = v + w8 * source[o8 + i]


@njit(inline="always")
def _plane_out(w, o, taps, source, grid, bias, epi, y, dst, out_h, out_w, row):
    """One output plane: grid = the sum over taps t of w[o, t] * source[taps[t]:][:grid.size],
    tap by tap, then _copy_out."""
    grid[:] = 0
    for t in range(taps.size):
        tap = w[o, t]
        off = taps[t]
        for i in range(grid.size):
            grid[U(i)] += tap * source[U(off + i)]
    _copy_out(grid, bias, epi, o, y, dst, out_h, out_w, row)


@njit(inline="always")
def _copy_out(grid, bias, epi, o, y, dst, out_h, out_w, row):
    """y[dst:] = the grid's out_h x out_w corner (rows of `row` in the grid), + bias[o] last
    (bias may be empty), then the epilogue `epi` (kernels/channel_epilogue.py) on the plane
    while it is in cache."""
    for oh in range(out_h):
        for ow in range(out_w):
            v = grid[U(oh * row + ow)]
            y[U(dst + oh * out_w + ow)] = v + bias[o] if bias.size else v
    finish_run(y, dst, out_h * out_w, o, epi)


@kernel(nogil=True)
def _forward_padded(x, w, bias, epi, y, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw,
                    sh, sw, dh, dw, lo, hi):
    mult = cout // cin
    wp, padded, grid = _plane_buffers(height, width, out_h, ph, pw, kw, dw, y.dtype,
                                      GRID_VALUES)
    taps = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            taps[ki * kw + kj] = _tap_offset(ki, kj, kw, dh, dw, wp)
    for plane in range(lo, hi):
        n = plane // cout
        o = plane % cout
        _pad_plane(x, (n * cin + o // mult) * height * width, height, width, ph, pw, wp,
                   padded)
        _plane_out(w, o, taps, padded, grid, bias, epi, y, plane * out_h * out_w, out_h,
                   out_w, wp)


# --- strided, on the padded plane's phases -------------------------------------------------
@njit(inline="always")
def _phase_sides(height, width, ph, pw, sh, sw):
    """(qh, qw): rows and columns of each of the sh x sw phases of the padded plane."""
    return -(-(height + 2 * ph) // sh), -(-(width + 2 * pw) // sw)


@kernel(nogil=True)
def _phase_plan(height, width, ph, pw, sh, sw, qh, qw, kh, kw, dh, dw):
    """Where _split_phases puts each image row and tap reads, computed once per call so that
    no division runs per plane: (rows (height, sw): where image row yy's columns of phase
    column b start, firsts (sw,): the first image column of phase column b, counts (sw,):
    how many, taps (kh * kw,): each tap's offset into the phases)."""
    firsts = np.empty(sw, np.int64)
    counts = np.empty(sw, np.int64)
    starts = np.empty(sw, np.int64)
    for b in range(sw):
        first = (b - pw) % sw                  # the first image column in phase column b
        firsts[b] = first
        counts[b] = max(0, (width - first + sw - 1) // sw)
        starts[b] = (first + pw) // sw
    rows = np.empty((height, sw), np.int64)
    for yy in range(height):
        a, i = (yy + ph) % sh, (yy + ph) // sh
        for b in range(sw):
            rows[yy, b] = ((a * sw + b) * qh + i) * qw + starts[b]
    taps = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            r, c = ki * dh, kj * dw
            taps[ki * kw + kj] = ((r % sh) * sw + c % sw) * qh * qw + (r // sh) * qw + c // sw
    return rows, firsts, counts, taps


@kernel(nogil=True)
def _split_phases(x, src, width, sw, rows, firsts, counts, phases):
    """phases[((a * sw + b) * qh + i) * qw + j] = the padded plane at row i * sh + a, column
    j * sw + b (zeros in the padding and past the plane), by _phase_plan's rows."""
    phases[:] = 0
    for yy in range(rows.shape[0]):
        src_row = src + yy * width
        for b in range(sw):
            dst, first = rows[yy, b], firsts[b]
            if sw == 1:             # a contiguous copy, which vectorizes
                for k in range(counts[b]):
                    phases[U(dst + k)] = x[U(src_row + first + k)]
            else:
                for k in range(counts[b]):
                    phases[U(dst + k)] = x[U(src_row + first + k * sw)]


@kernel(nogil=True)
def _split_rows(x, src, width, rows, phases):
    """_split_phases at stride 1 (one phase): whole rows, contiguous copies, which
    vectorize. A function of its own: a branch for it inside _split_phases made the short
    rows of the general loop slower (7x7 planes' weight gradient 0.30 -> 0.39 ms)."""
    phases[:] = 0
    for yy in range(rows.shape[0]):
        dst, src_row = U(rows[yy, 0]), U(src + yy * width)
        for k in range(width):
            phases[dst + U(k)] = x[src_row + U(k)]


@njit(inline="always")
def _input_phases(x, plane, cin, cout, height, width, sw, rows, firsts, counts, phases,
                  rows_only):
    """Split the input plane that output plane `plane` (image n, channel o) reads into
    `phases`; returns o."""
    n, o = divmod(plane, cout)
    src = (n * cin + o // (cout // cin)) * height * width
    if rows_only:
        _split_rows(x, src, width, rows, phases)
    else:
        _split_phases(x, src, width, sw, rows, firsts, counts, phases)
    return o


@kernel(nogil=True)
def _forward_phases(x, w, bias, epi, y, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw,
                    sh, sw, dh, dw, lo, hi):
    """The forward on the padded plane split into its sh x sw phases (_split_phases; one
    phase at stride 1): tap (ki, kj) reads phase ((ki dh) % sh, (kj dw) % sw) from row
    (ki dh) // sh, column (kj dw) // sw on, so each tap is one pass of out_h * qw contiguous
    multiply-adds over an output grid of rows as wide as a phase, the columns past out_w
    thrown away. Row by row, a 14x14 plane at stride 2 gave runs of 7 columns: scalar code,
    4x PyTorch's time."""
    qw, rows, firsts, counts, taps, phases, grid = _phase_buffers(
        height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, y.dtype)
    mult = cout // cin
    for plane in range(lo, hi):
        n = plane // cout
        o = plane % cout
        _split_phases(x, (n * cin + o // mult) * height * width, width, sw, rows, firsts,
                      counts, phases)
        _plane_out(w, o, taps, phases, grid, bias, epi, y, plane * out_h * out_w, out_h,
                   out_w, qw)


@kernel(nogil=True)
def _forward_nine(x, w, bias, epi, y, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw,
                  sh, sw, dh, dw, lo, hi):
    """_forward_phases for a 3x3 filter, its nine taps summed in one pass (_grid_of_nine). A
    kernel of its own: the choice inside _forward_phases' plane loop cost the small planes
    a third of their time (7x7: 75 -> 105 ns a plane)."""
    qw, rows, firsts, counts, taps, phases, grid = _phase_buffers(
        height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, y.dtype)
    for plane in range(lo, hi):
        o = _input_phases(x, plane, cin, cout, height, width, sw, rows, firsts, counts, phases,
                          sw == 1)
        _grid_of_nine(w[o], taps, phases, grid)
        _copy_out(grid, bias, epi, o, y, plane * out_h * out_w, out_h, out_w, qw)


@njit(inline="always")
def _phase_buffers(height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, dtype):
    """(qw, rows, firsts, counts, taps, phases, grid): the phase plan (_phase_plan), a
    buffer of the phases and an output grid of out_h rows of qw, rounded up to whole
    vectors."""
    qh, qw = _phase_sides(height, width, ph, pw, sh, sw)
    rows, firsts, counts, taps = _phase_plan(height, width, ph, pw, sh, sw, qh, qw, kh, kw,
                                             dh, dw)
    # the last phase's last row runs past it by up to the widest column shift
    span = _whole(out_h * qw, GRID_VALUES)
    phases = np.empty(sh * sw * qh * qw + (kw - 1) * dw // sw + 1 + span - out_h * qw, dtype)
    return qw, rows, firsts, counts, taps, phases, np.empty(span, dtype)


@kernel(nogil=True)
def _merge_phases(phases, width, sw, rows, firsts, counts, dx, dst):
    """dx[dst + yy * width + xx] = the padded plane's pixel (yy, xx) in `phases`: the
    inverse of _split_phases."""
    for yy in range(rows.shape[0]):
        dst_row = dst + yy * width
        for b in range(sw):
            src, first = rows[yy, b], firsts[b]
            if sw == 1:
                for k in range(counts[b]):
                    dx[U(dst_row + first + k)] = phases[U(src + k)]
            else:
                for k in range(counts[b]):
                    dx[U(dst_row + first + k * sw)] = phases[U(src + k)]


@kernel(nogil=True)
def _data_phases(dy, w, dx, cin, cout, height, width, out_h, out_w, kh, kw, ph, pw, sh, sw,
                 dh, dw, lo, hi):
    """The data gradient on the padded plane's phases: each tap adds w * dy's grid (rows of
    qw, zero past out_w) to its phase from its offset on, one contiguous pass, then the
    phases go back into the plane. The sums and their order are _data_planes' (over output
    channels, then taps); the zero columns add exact zeros. Row by row, MobileNet's
    stride-2 layers scattered 7-56 columns at a stride: scalar code."""
    mult = cout // cin
    qw, rows, firsts, counts, taps, phases, grid = _phase_buffers(
        height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, dx.dtype)
    for plane in range(lo, hi):
        n = plane // cin
        c = plane % cin
        phases[:] = 0
        for o in range(c * mult, (c + 1) * mult):
            _grid_plane(dy, (n * cout + o) * out_h * out_w, out_h, out_w, qw, grid)
            for t in range(taps.size):
                tap = w[o, t]
                off = taps[t]
                for i in range(grid.size):
                    phases[U(off + i)] += tap * grid[U(i)]
        _merge_phases(phases, width, sw, rows, firsts, counts, dx, plane * height * width)


@kernel(nogil=True, fastmath={"reassoc"})
def _weight_sums_phases(x, dy, sums, want_w, want_b, cin, cout, height, width, out_h, out_w,
                        kh, kw, ph, pw, sh, sw, dh, dw, lo, hi):
    """_weight_sums on the padded plane's phases: each tap one contiguous float64 sum over
    dy's grid (zero past out_w) against its phase."""
    batch = x.size // (cin * height * width)
    mult = cout // cin
    qw, rows, firsts, counts, taps, phases, grid = _phase_buffers(
        height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, x.dtype)
    for o in range(lo, hi):
        c = o // mult
        for n in range(batch):
            _grid_plane(dy, (n * cout + o) * out_h * out_w, out_h, out_w, qw, grid)
            if want_b:
                total = 0.0
                for i in range(grid.size):
                    total += np.float64(grid[U(i)])
                sums[o, kh * kw] += total
            if not want_w:
                continue
            _split_phases(x, (n * cin + c) * height * width, width, sw, rows, firsts, counts,
                          phases)
            for t in range(taps.size):
                off = taps[t]
                total = 0.0
                for i in range(grid.size):
                    total += np.float64(grid[U(i)]) * np.float64(phases[U(off + i)])
                sums[o, t] += total


@kernel(nogil=True, fastmath={"reassoc"})
def _weight_sums_nine(x, dy, sums, want_w, want_b, cin, cout, height, width, out_h, out_w,
                      kh, kw, ph, pw, sh, sw, dh, dw, lo, hi):
    """_weight_sums_phases for a 3x3 filter, its nine sums in one pass (_nine_sums). A
    kernel of its own, as _forward_nine."""
    batch = x.size // (cin * height * width)
    mult = cout // cin
    qw, rows, firsts, counts, taps, phases, grid = _phase_buffers(
        height, width, out_h, kh, kw, ph, pw, sh, sw, dh, dw, x.dtype)
    for o in range(lo, hi):
        c = o // mult
        for n in range(batch):
            _grid_plane(dy, (n * cout + o) * out_h * out_w, out_h, out_w, qw, grid)
            if want_b:
                total = 0.0
                for i in range(grid.size):
                    total += np.float64(grid[U(i)])
                sums[o, kh * kw] += total
            if want_w:
                _split_phases(x, (n * cin + c) * height * width, width, sw, rows, firsts,
                              counts, phases)
                _nine_sums(grid, phases, taps, sums[o])


#: a 3x3 filter's weight gradient over grids of at least this many values sums its nine
#: taps in one pass (_nine_sums). Two cores, batch 8: 64 x 56x56 1.28 -> 0.95 ms, 16 x
#: 112x112 1.41 -> 1.23, stride 2 at 112x112 1.23 -> 1.0-1.1; but 7x7 0.31 -> 0.37 and
#: stride 2 at 56x56 (812 values) 0.65 -> 0.78
NINE_SUMS_MIN_VALUES = 1024


@kernel(nogil=True, fastmath={"reassoc"})
def _nine_sums(grid, phases, taps, sums):
    """sums[t] += the float64 sum over i of grid[i] * phases[taps[t] + i] for nine taps, in
    one pass over the grid: each grid vector is read once for all nine, where a pass per
    tap read it nine times."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = (U(taps[0]), U(taps[1]), U(taps[2]), U(taps[3]),
                                          U(taps[4]), U(taps[5]), U(taps[6]), U(taps[7]),
                                          U(taps[8]))
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = 0.0
    for j in range(grid.size):
        i = U(j)
        g = np.float64(grid[i])
        s0 += g * np.float64(phases[o0 + i])
        s1 += g * np.float64(phases[o1 + i])
        s2 += g * np.float64(phases[o2 + i])
        s3 += g * np.float64(phases[o3 + i])
        s4 += g * np.float64(phases[o4 + i])
        s5 += g * np.float64(phases[o5 + i])
        s6 += g * np.float64(phases[o6 + i])
        s7 += g * np.float64(phases[o7 + i])
        s8 += g * np.float64(phases[o8 + i])
    sums[0] += s0
    sums[1] += s1
    sums[2] += s2
    sums[3] += s3
    sums[4] += s4
    sums[5] += s5
    sums[6] += s6
    sums[7] += s7
    sums[8] += s8


@kernel(nogil=True)
def _grid_plane(dy, src, out_h, out_w, wp, grid):
    """grid[oh * wp + ow] = dy[src + oh * out_w + ow]; zeros in the columns past out_w."""
    grid[:] = 0
    for oh in range(out_h):
        for ow in range(out_w):
            grid[U(oh * wp + ow)] = dy[U(src + oh * out_w + ow)]
