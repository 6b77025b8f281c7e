"""The weight and bias gradients of a convolution on register-blocked tiles, from
channels-last copies of the image and of dy.

    dw[m, c, ki, kj] += sum over n, oy, ox of
                        dy[n, m, oy, ox] * xpad[n, c, oy*sh + ki*dh, ox*sw + kj*dw]
    db[m]            += sum over n, oy, ox of dy[n, m, oy, ox]

For one tap (ki, kj) this is a product with a long sum, over the output positions p =
(n, oy, ox): dwT[tap, c, m] = sum_p xcl[at(p) + off(tap), c] * dycl[p, m], where xcl is the
padded image channels-last (xcl[n, y, x, c]), dycl is dy channels-last (dycl[p, m]), at(p)
is the position of p's window in xcl and off(tap) the tap's place in the window. A tile
(vector_tile's indexed tiles, the forward's tile with both operands at offsets of their
own) keeps eight channels x three vectors of sixteen output channels in registers while it
runs over a chunk of positions: each step loads three vectors of dycl and broadcasts eight
consecutive floats of xcl for 24 FMAs, as the forward's tile does. Nothing is lowered,
any stride and dilation is an `at(p)` and an `off(tap)`, and each sum is one FMA per
position in order, with no reduction across lanes at the end (the older tiles of
kernels/blocked_weight_grad.py ran their sums along the positions, ten loads per 24 FMAs
and a tree over the lanes, at 100-120 GFLOP/s on one core against the forward's 170-190).

Summation order (against the lowered GEMM's): each dw element sums its N*OH*OW terms in
(n, oy, ox) order, in float32, one FMA each; db sums in float64, in the same order, and
is rounded once. Equal to float32 rounding over N*OH*OW terms. The workers split the (tap,
block of eight channels) rows, so each sum is one worker's, whatever the thread count.
"""
import numpy as np
from llvmlite import binding
from numba import config, njit

from . import blocked_conv
from .conv import _check
from .gemm import _RUN_LOCK, workspace
from .jit import kernel
from .neuron import STREAMING_MIN, split_range
from .vector_tile import (LANES, ROWS, VECTORS, indexed_add, indexed_add_1, indexed_add_2,
                          indexed_store, indexed_store_1, indexed_store_2)

#: where these tiles run (`applies`), measured against the weight gradients there before
#: them, two cores, float32, forward + bias gradient alike: 1.03-1.12x faster with 32+ input
#: and 64-192 output channels per group (miniVggNet conv3/conv4, cifar10_quick conv3,
#: JacintoNet11's 32 -> 64 layer and group-4 layers of 64 and 128, CaffeNet conv4/conv5);
#: slower with fewer input channels (rows of eight channels padded: 0.29-0.4x with 1-8),
#: 32 outputs (0.91-0.97x against the older tiles) or 256-512 (0.85-1.0x against
#: OpenBLAS), and 1x1 filters (the lowered product is the image itself). Measured on
#: batches of 16 and more and stride 1 only, so only those run here (the kernel itself
#: takes any stride and dilation)
MIN_INPUTS, MIN_OUTPUTS, MIN_BATCH = 32, 64, 16


def widest_outputs(cpu_name):
    """The most output channels per group that run here on this CPU. On an AMD Zen 4 (a
    512-bit FMA in two 256-bit halves) OpenBLAS's lowered product no longer keeps up with
    the tiles at 256-512 outputs: two cores, batch 64 unless said, lowered / tiles,
    JacintoNet11's res5a_branch2a (256 -> 512 at 8x8) 58.8-60.8 / 52.2 ms, res4a_branch2a
    (128 -> 256 at 16x16) 57.4-58.6 / 51.3-52.2, CaffeNet's conv3 at batch 16 (256 -> 384)
    30.8-32.0 / 27.0-28.4. Elsewhere (the Intel Xeon's measurement above) 192."""
    return 512 if cpu_name.startswith("znver") else 192


#: a portable Numba cache (NUMBA_CPU_NAME=generic) keeps the measured-everywhere bound
MAX_OUTPUTS = widest_outputs(binding.get_host_cpu_name()
                             if config.CPU_NAME in (None, "host") else "generic")
#: output positions packed at a time (whole images): 4-5 MB of packed image and dy on
#: miniVggNet's conv4, where the whole batch took 19 MB of scratch that stayed allocated
#: (measured there: 8192 positions 5% slower, 16384 within 4% of the whole batch)
CHUNK_POSITIONS = 16384
#: output positions per pass over a row's tiles: the pass's dycl (three vectors per
#: position, 24 KB) and its eight image channels per position stay in L1
POSITION_CHUNK = 128


def _round_up(n, step):
    return -(-n // step) * step


@kernel(nogil=True)
def _pack_image(x, c0, cg, pad_h, pad_w, hp, wp, xb, lo, hi):
    """xb[b, (n*hp + y)*wp + x, i] = x[n, c0 + b*ROWS + i, y - pad_h, x - pad_w] for the blocks
    of ROWS channels [lo, hi); zeros in the padding and past channel cg. Written in order,
    each float read from its channel's row (ROWS rows read side by side)."""
    n_img, _, height, width = x.shape
    plane = hp * wp * ROWS
    for b in range(lo, hi):
        block = xb[b]
        channels = min(ROWS, cg - b * ROWS)
        for n in range(n_img):
            block[n * plane:(n + 1) * plane] = 0
            for y in range(height):
                row = n * plane + ((y + pad_h) * wp + pad_w) * ROWS
                if channels == ROWS:        # a constant count: the inner loop unrolls
                    for x_ in range(width):
                        for i in range(ROWS):
                            block[row + x_ * ROWS + i] = x[n, c0 + b * ROWS + i, y, x_]
                else:
                    for x_ in range(width):
                        for i in range(channels):
                            block[row + x_ * ROWS + i] = x[n, c0 + b * ROWS + i, y, x_]


@kernel(nogil=True)
def _pack_dy(dy, m0, mg, dyb, sums, lo, hi):
    """dyb[v, (n*oh + y)*ow + x, l] = dy[n, m0 + v*LANES + l, y, x] for the vectors of LANES
    output channels [lo, hi), zeros past channel mg; sums[v, l] += the channel's values (the
    bias gradient, in float64). Written in order, as _pack_image."""
    n_img, _, out_h, out_w = dy.shape
    for v in range(lo, hi):
        block = dyb[v]
        lanes = min(LANES, mg - v * LANES)
        if lanes < LANES:
            block[:] = 0
        total = sums[v]
        for n in range(n_img):
            for y in range(out_h):
                row = (n * out_h + y) * out_w * LANES
                if lanes == LANES:
                    for x_ in range(out_w):
                        for lane in range(LANES):
                            value = dy[n, m0 + v * LANES + lane, y, x_]
                            block[row + x_ * LANES + lane] = value
                            total[lane] += value
                else:
                    for x_ in range(out_w):
                        for lane in range(lanes):
                            value = dy[n, m0 + v * LANES + lane, y, x_]
                            block[row + x_ * LANES + lane] = value
                            total[lane] += value


@njit(inline="always")
def _tile(vectors, first, dyb, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms):
    """The indexed tile `vectors` wide, storing its sums (the first chunk) or adding them."""
    if vectors == VECTORS:
        if first:
            indexed_store(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)
        else:
            indexed_add(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)
    elif vectors == 2:
        if first:
            indexed_store_2(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)
        else:
            indexed_add_2(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)
    elif first:
        indexed_store_1(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)
    else:
        indexed_add_1(dyb, 0, pix, t, xb, woff, at, p0, p1, dwt, yoff, ms)


@kernel(nogil=True)
def _rows(dyb, pix, xb, tap_offsets, at, cblocks, vectors, dwt, ms, chunk, fresh, lo, hi):
    """dwt[tap, c, m] = (fresh) or += the sums above over the positions of `at`, for the rows
    (tap, block of ROWS channels) [lo, hi), `chunk` positions at a time."""
    positions = at.shape[0]
    block = xb.shape[1]                 # floats per block of channels
    # tiles of three vectors, then two, then one; a remainder of one after threes runs as
    # two twos instead (the one-vector tile loads one vector per eight broadcasts)
    threes, rest = vectors // VECTORS, vectors % VECTORS
    if rest == 1 and threes:
        threes, rest = threes - 1, 4
    twos_end = threes * VECTORS + rest // 2 * 2
    for p0 in range(0, positions, chunk):
        p1 = min(positions, p0 + chunk)
        first = fresh and p0 == 0
        for r in range(lo, hi):
            tap, cb = r // cblocks, r % cblocks
            woff = cb * block + tap_offsets[tap]
            y0 = r * ROWS * ms
            t = 0
            while t < vectors:
                width = VECTORS if t < threes * VECTORS else 2 if t < twos_end else 1
                _tile(width, first, dyb, pix, t, xb, woff, at, p0, p1, dwt, y0 + t * LANES, ms)
                t += width


@kernel(nogil=True)
def _add_transposed(dwt, cs, ms, kk, cg, dw2, lo, hi):
    """dw2[m, c*kk + tap] += dwt[(tap*cs + c)*ms + m] for the output channels [lo, hi), in
    blocks of 32 channels x 8 input channels (a block of dw2 stays in L1; NumPy's strided
    transpose of CaffeNet-size gradients took longer than their products)."""
    for m0 in range(lo, hi, 32):
        m1 = min(hi, m0 + 32)
        for c0 in range(0, cg, ROWS):
            for c in range(c0, min(cg, c0 + ROWS)):
                for tap in range(kk):
                    src = (tap * cs + c) * ms
                    col = c * kk + tap
                    for m in range(m0, m1):
                        dw2[m, col] += dwt[src + m]


def _window_starts(n, out_h, out_w, hp, wp, geo):
    """at(p) for every output position p = (n, oy, ox), in floats of an image block."""
    oy, ox = np.divmod(np.arange(out_h * out_w, dtype=np.int64), out_w)
    per_image = oy * geo.stride_h * wp + ox * geo.stride_w
    return ((np.arange(n, dtype=np.int64)[:, None] * (hp * wp) + per_image).reshape(-1)
            * ROWS)


def applies(x, geo, outputs):
    """Whether dw of y = conv(x, w) with `outputs` channels runs here (MIN_INPUTS...)."""
    return (blocked_conv.may_apply(x, geo) and not geo.is_1x1 and x.shape[0] >= MIN_BATCH
            and x.shape[1] // geo.group >= MIN_INPUTS
            and MIN_OUTPUTS <= outputs // geo.group <= MAX_OUTPUTS)


def nhwc_weight_grad(x, dy, geo, dw, db=None):
    """dw (M, C/g, kh, kw) += and db (M,) += the gradients above (db: None to skip)."""
    _check(x, dw, geo, dy)
    x = np.ascontiguousarray(x, np.float32)
    dy = np.ascontiguousarray(dy, np.float32)
    n, c, height, width = x.shape
    group = geo.group
    cg, mg = c // group, dy.shape[1] // group
    out_h, out_w = dy.shape[2:]
    hp, wp = height + 2 * geo.pad_h, width + 2 * geo.pad_w
    cs, ms = _round_up(cg, ROWS), _round_up(mg, LANES)
    kk = geo.kernel_h * geo.kernel_w
    ki, kj = np.divmod(np.arange(kk, dtype=np.int64), geo.kernel_w)
    tap_offsets = (ki * geo.dilation_h * wp + kj * geo.dilation_w) * ROWS
    # images a chunk at a time, in order: the same sums in the same order, with scratch
    # for CHUNK_POSITIONS positions rather than the whole batch
    images = max(1, min(n, CHUNK_POSITIONS // (out_h * out_w)))
    capacity = images * out_h * out_w
    vectors, cblocks = ms // LANES, cs // ROWS
    rows = kk * cblocks
    dw2 = dw.reshape(dw.shape[0], -1)
    if not np.shares_memory(dw2, dw):
        raise ValueError("the weight gradient must be one contiguous array")
    with _RUN_LOCK:         # worker 0's scratch is every split_batch's too: take turns
        ws = workspace(0)
        # the older tiles' image and dy buffers: the two never run at the same time
        xb = ws.get("blocked_x", (cblocks, images * hp * wp * ROWS), np.float32)
        dyb = ws.get("blocked_dy", (vectors, capacity * LANES), np.float32)
        dwt = ws.get("nhwc_dwt", (kk * cs * ms,), np.float32)
        pix = np.arange(vectors, dtype=np.int64) * (capacity * LANES)
        for g in range(group):
            sums = np.zeros((vectors, LANES))
            for n0 in range(0, n, images):
                xs, dys = x[n0:n0 + images], dy[n0:n0 + images]
                at = _window_starts(len(xs), out_h, out_w, hp, wp, geo)
                # copies of a chunk: split as the streaming kernels are
                split_range(_pack_image, cblocks, xs.size // group, xs, g * cg, cg,
                            geo.pad_h, geo.pad_w, hp, wp, xb, parallel_min=STREAMING_MIN)
                split_range(_pack_dy, vectors, dys.size // group, dys, g * mg, mg, dyb, sums,
                            parallel_min=STREAMING_MIN)
                split_range(_rows, rows, 2 * rows * ROWS * ms * len(at), dyb, pix, xb,
                            tap_offsets, at, cblocks, vectors, dwt, ms, POSITION_CHUNK, n0 == 0)
            split_range(_add_transposed, mg, mg * cg * kk, dwt, cs, ms, kk, cg,
                        dw2[g * mg:(g + 1) * mg])
            if db is not None:
                db[g * mg:(g + 1) * mg] += sums.reshape(-1)[:mg].astype(np.float32)
