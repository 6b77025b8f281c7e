"""Convolution without lowering, on register-blocked tiles (kernels/vector_tile.py).

y[n, m, oy, ox] = sum over (c, ki, kj) of w[m, c, ki, kj]
                  * xpad[n, c, oy*sh + ki*dh, ox*sw + kj*dw]            (+ bias[m])
per group, where xpad is the image zero-padded by (pad_h, pad_w).

With stride 1, tap (c, ki, kj) of output (oy, ox) reads the padded image at a fixed offset
from where output (oy, ox) sits in it, so a tile needs one table of tap offsets and the
positions of its outputs, and no lowered copy (im2col writes kh*kw times the image and
OpenBLAS then packs it again). Three layouts of the padded image:

* lanes (whole blocks of 16 images): 16 images side by side, xpad[c, r, q, lane]; a vector
  is one pixel of 16 images, so every vector holds outputs, and the loads are aligned.
* flat (the images after the last whole block): one image, xpad[c, r * Wp + q] on rows of
  the padded width Wp; a vector is 16 consecutive positions of that flat plane, outputs
  (oy, ox) sitting at oy * Wp + ox. The Wp - OW positions past each output row, and the
  rounding of the last vector, are computed and dropped.
* phases (a stride above 1, every image on its own): the padded image split into its
  stride's sh*sw phases, phase (a, b) holding xpad[r*sh + a, q*sw + b] at (r, q), each
  phase flat on rows of its width Wq. Tap (c, ki, kj) reads phase (ki*dh % sh, kj*dw % sw)
  at (oy + ki*dh // sh, ox + kj*dw // sw): stride 1 again, at a fixed offset per tap, so
  the same tiles run it with the filter's own taps, in place and in Caffe's order.

Output channels go by blocks of vector_tile.ROWS, read from the weight where it lies (the
last block's rows past M/g compute sums that are dropped; a last block of at most
vector_tile.HALF_ROWS channels runs tiles half as high). Taps go by blocks of TAP_BLOCK
or fewer (_tap_bounds), so that a tile's weights stay in L1 and the image rows they read
in L2, and outputs by chunks of PIXEL_CHUNK vectors, so that the image rows the chunk reads
stay in L2 while every block of output channels passes over them; later tap blocks add
onto the tile.

Sums run over a filter's taps in (c, ki, kj) order, one FMA each, then the bias is added:
the dense GEMM's order for a product of one image, so results match the lowered
convolution to float32 rounding.

`applies` asks for float32 and AVX-512 (the tile's 24 accumulators are 16-float vectors;
on AVX2 they would spill), and for the flat and phase layouts enough work (_flat_pays).
Measured on the Intel Xeon of docs/benchmarks.md, two cores, forward: 1.3-2.3x the lowered
GEMM on the convolutions of LeNet, cifar10_quick and miniVggNet (first layers included:
one to three channels, 9-75 taps), 1.0-1.4x on CaffeNet conv2-conv5 at batch 16.
"""
from functools import lru_cache
from itertools import chain
from typing import NamedTuple

import numpy as np
from llvmlite import binding
from numba import config, njit, uint64 as U

from .channel_epilogue import ChannelEpilogue, finish_run
from .conv import _check
from .gemm import batch_workers, split_batch, workspace
from .jit import kernel
from .lane_transpose import transpose_block, transpose_block_add
from .vector_tile import (HALF_ROWS, LANES, ROWS, VECTORS, half_add, half_add_1, half_add_2,
                          half_store, half_store_1, half_store_2, tile_add, tile_add_1,
                          tile_add_2, tile_store, tile_store_1, tile_store_2)

#: fewest multiply-adds for a pass to split over the workers: a split packs the image on
#: both cores and, where the worker sleeps, wakes it (0.1 ms). It was 1 << 25 (miniVggNet's
#: conv2 at batch 1, 9.4 M: 0.23 ms on one core, 0.42 on two, the worker asleep); with the
#: pool polling through a pass, 1 << 23 made JacintoNet11's TEST forward at batch 1 2.7%
#: faster (4.57 -> 4.44 ms; its 9-19 M layers), LeNet, cifar10_quick and miniVggNet level
#: on the Intel Xeon. On the AMD EPYC (Zen 4: a 512-bit FMA runs as two 256-bit halves,
#: half the Xeon's rate per core) 1 << 21 splits the 2-8 M layers too: TEST forward at
#: batch 1, cifar10_quick 0.545 -> 0.480 ms, miniVggNet 0.90-0.95 -> 0.855, LeNet,
#: JacintoNet11 and mobilenet-0.5 level; at 1 << 20 LeNet lost 5%
TILES_SPLIT_MIN_MACS = 1 << 21
#: fewest multiply-adds per flat image for tiles: below, the packing and the call overheads
#: lose to the lowered GEMM. Since the plan is kept per shape and the weight read in place,
#: that is only below LeNet's conv1 (288 K); TEST forward at batch 1 with 4 M / 256 K:
#: LeNet 0.57 / 0.49 ms, cifar10_quick 1.0 / 0.76, JacintoNet11 6.8 / 6.2
FLAT_MIN_MACS = 1 << 18
#: taps per block: a block's weights, ROWS x TAP_BLOCK floats, are 16 KB (a third of L1)
TAP_BLOCK = 512
#: output vectors per chunk: every block of output channels runs over a chunk before the
#: next, so the image rows that the chunk reads (about 96 pixels x the block's channels,
#: 0.3-0.8 MB on the nets measured) stay in L2 instead of streaming from L3 once per block
#: (a 1x1 convolution of 128 channels at 28x28, batch 8, ran 3.8x slower unchunked)
PIXEL_CHUNK = 96
#: the packings' list of channels that means every channel of the group, in order
ALL_CHANNELS = np.empty(0, np.int64)


def _has_avx512():
    if config.CPU_NAME not in (None, "host"):
        return False            # a portable Numba cache (NUMBA_CPU_NAME=generic)
    features = binding.get_host_cpu_features()
    return bool(features.get("avx512f"))


AVX512 = _has_avx512()


def _flat_pays(x, geo, taps, outputs):
    """Whether a batch of fewer than LANES images may run flat. Not for small images, too
    little work for the pass's fixed cost (FLAT_MIN_MACS). Long filters run flat too: with
    the weight read in place, 2304-9216 taps at batch 1 ran 1.3-1.8x faster than OpenBLAS's
    GEMM on both cores (CaffeNet conv2-conv5, JacintoNet11's 8x8 and 16x16 layers, VGG's
    512 channels at 14x14 and 28x28); a packed copy of the weight had cost more than that
    (1.3 ms for 512 x 2304)."""
    pixels = x.shape[2] * x.shape[3] // (geo.stride_h * geo.stride_w)
    return taps * outputs * pixels >= FLAT_MIN_MACS


def may_run(x):
    """What every use of the tiles needs: AVX-512, float32, a non-empty batch."""
    return AVX512 and x.dtype == np.float32 and x.size > 0


def may_apply(x, geo):
    """may_run at stride 1: what the channels-last weight gradient
    (kernels/nhwc_weight_grad.py) and the flipped data gradient need."""
    return may_run(x) and geo.stride_h == 1 and geo.stride_w == 1


def applies(x, geo, outputs, taps=None):
    """Whether y = conv(x, w) with `outputs` channels runs on tiles here (module
    docstring); `taps`: per output, when fewer than the filter's (a compacted weight).
    Never for a 1x1 convolution without padding: each image is its own lowered matrix,
    and OpenBLAS's product of it (kernels/conv.py's _pointwise_forward) ran 1.1-3.5x
    faster than the tiles, two threads: 16 x 256 x 56 x 56 -> 64 10.8 / 37.5 ms, batch 8
    at 112 x 112 32 -> 64 2.7 / 4.3 ms, 64 x 512 x 7 x 7 -> 512 8.0 / 9.0 ms."""
    if taps is None:
        taps = x.shape[1] // geo.group * geo.kernel_h * geo.kernel_w
    lanes = x.shape[0] >= LANES and geo.stride_h == 1 and geo.stride_w == 1
    return (may_run(x) and not geo.is_1x1
            and (lanes or _flat_pays(x, geo, taps, outputs)))


#: most output channels per group for which the weight gradient runs on tiles
#: (kernels/blocked_weight_grad.py): with more, the lowered GEMM (M/g x P*n by P*n x K) is
#: wide enough for OpenBLAS. Measured, two cores: 32-64 per group 1.1-1.5x faster on tiles
#: (LeNet, cifar10_quick, miniVggNet, JacintoNet11's group-4 layers); 128-512 per group
#: 0.9-1.05x (CaffeNet conv2-conv5 at batch 16, JacintoNet11's group-1 layers)
GRAD_MAX_OUTPUTS = 96


#: fewest output pixels per plane for a strided convolution's weight gradient on tiles. A
#: strided layer runs each image flat on its stride phases, with a fixed cost per image and
#: group (packing its dy, starting its tiles) that the lowered GEMM, one product over the
#: batch, does not pay. Two cores, tiles / lowered: 3 -> 16 at 224x224, stride 2, batch 8
#: (mobilenet-0.5's conv1, 112x112 outputs) 1.28 / 2.99 ms; CaffeNet's conv1 at batch 16
#: (55x55) 15.5 / 20.8; 16 -> 32 at 56x56 outputs 1.74 / 2.71; 32 -> 64 at 28x28 1.45 /
#: 1.68; but at 16x16 outputs, batch 64, 4.4 / 4.3 (32 -> 64) and 2.3 / 1.7 (16 -> 32)
STRIDED_GRAD_MIN_PIXELS = 512


def weight_grad_applies(x, geo, outputs):
    """Whether dw of y = conv(x, w) with `outputs` channels runs on tiles here: at stride 1,
    or strided (on the stride phases, as the forward) with large enough output planes."""
    if geo.stride_h != 1 or geo.stride_w != 1:
        out_h, out_w = geo.output_shape(x.shape[2], x.shape[3])
        if out_h * out_w < STRIDED_GRAD_MIN_PIXELS:
            return False
    return (outputs // geo.group <= GRAD_MAX_OUTPUTS and may_run(x)
            and applies(x, geo, outputs))


class _Layout:
    """Where taps and outputs sit in one (image block, group)'s padded image."""

    def __init__(self, lanes, cg, height, width, out_h, out_w, geo):
        self.lanes = lanes
        sh, sw = self.strides = (geo.stride_h, geo.stride_w)
        # rows and columns of a phase (of the padded image: stride 1) that outputs read
        self.hp = out_h + (geo.kernel_h - 1) * geo.dilation_h // sh
        self.wp = out_w + (geo.kernel_w - 1) * geo.dilation_w // sw
        plane = self.hp * self.wp
        step = LANES if lanes else 1
        ki = np.arange(geo.kernel_h) * geo.dilation_h
        kj = np.arange(geo.kernel_w) * geo.dilation_w
        rows = (ki % sh * sw)[:, None] * plane + (ki // sh * self.wp)[:, None]
        cols = (kj % sw)[None, :] * plane + (kj // sw)[None, :]
        taps = np.add.outer(np.arange(cg) * sh * sw * plane, (rows + cols).reshape(-1))
        self.taps = (taps.reshape(-1) * step).astype(np.int64)
        if lanes:
            oy, ox = np.divmod(np.arange(out_h * out_w), out_w)
            self.pix = ((oy * self.wp + ox) * LANES).astype(np.int64)
            self.x_size = cg * plane * LANES
        else:
            vectors = -(-out_h * self.wp // LANES)
            self.pix = np.arange(vectors, dtype=np.int64) * LANES
            # the last vector reads up to its rounding past the last tap's row
            self.x_size = cg * sh * sw * plane + len(self.pix) * LANES
        self.row = len(self.pix) * LANES          # floats per output channel in the tile buffer
        self.pads = (geo.pad_h, geo.pad_w)
        self.out_w = out_w
        # below an output's row, the rows its taps read (stride 1)
        self.reach_rows = (geo.kernel_h - 1) * geo.dilation_h
        # the forward's unit kernel for this layout (each compiles only its own packing)
        self.unit = _unit_lanes if lanes else _unit_flat if (sh, sw) == (1, 1) else _unit_phases

    def rows(self, v0, v1):
        """[r0, r1): the rows of each channel's padded plane that output vectors (pixels)
        [v0, v1) of the lanes layout read."""
        return v0 // self.out_w, (v1 - 1) // self.out_w + 1 + self.reach_rows

    def pack(self, x, n0, c0, cg, xb):
        """xb = channels [c0, c0 + cg) of image n0 (and the next 15: lanes) of x, padded."""
        xb = xb[:self.x_size]
        if self.lanes:
            _pack_lanes(x, n0, c0, cg, ALL_CHANNELS, *self.pads, self.hp, self.wp, xb, 0,
                        self.hp)
        elif self.strides == (1, 1):
            _pack_flat(x, n0, c0, cg, ALL_CHANNELS, *self.pads, self.hp, self.wp, xb)
        else:
            _pack_phases(x, n0, c0, cg, ALL_CHANNELS, *self.pads, *self.strides, self.hp,
                         self.wp, xb)


@kernel(nogil=True)
def _pack_lanes(x, n0, c0, cg, chans, pad_h, pad_w, hp, wp, xb, r0, r1):
    """xb[c, r, q, lane] = image n0 + lane, channel c0 + c (c0 + chans[c] where chans is not
    empty), padded, for the padded rows r in [r0, r1); zeros in the padding. Rows of 16
    pixels of 16 images go through one register transpose each (kernels/lane_transpose.py);
    without a left or right pad, a channel's rows are one run of pixels."""
    n_img, channels, height, width = x.shape
    count = min(LANES, n_img - n0)
    xf = x.reshape(-1)
    image = channels * height * width
    line = wp * LANES
    r1 = min(r1, hp)
    h0 = min(max(r0, pad_h), pad_h + height)          # the image rows among them
    h1 = max(min(r1, pad_h + height), h0)
    for c in range(cg):
        plane = c * hp * line
        for i in range(r0 * line, h0 * line):
            xb[plane + i] = 0
        for i in range(h1 * line, r1 * line):
            xb[plane + i] = 0
        src = n0 * image + (c0 + (chans[c] if chans.size else c)) * height * width + \
            (h0 - pad_h) * width
        dst = plane + h0 * line
        # one call site of the inlined transpose (with two it compiled in 0.57 s, not 0.44);
        # without side pads (wp == width) the pad loops are empty and the rows are one run
        runs, length = (1, (h1 - h0) * width) if pad_w == 0 else (h1 - h0, width)
        for h in range(runs):
            row = dst + h * line
            for i in range(pad_w * LANES):
                xb[row + i] = 0
            for i in range((pad_w + width) * LANES, line):
                xb[row + i] = 0
            _transpose_run(xf, src + h * width, image, count, length, xb, row + pad_w * LANES)


@kernel(nogil=True, inline="always")
def _transpose_run(xf, src, image, count, length, xb, dst):
    """xb[dst + q * LANES + lane] = xf[src + lane * image + q] for q < length, lane < count;
    the lanes past count are 0."""
    for q0 in range(0, length, LANES):
        transpose_block(xf, src + q0, image, count, min(LANES, length - q0), xb,
                        dst + q0 * LANES, LANES, LANES)


@njit(inline="always")
def _unpack_lanes(yb, row, n0, m0, m1, p_lo, p_hi, channel, bias, epi, y):
    """y[n0 + lane, channel[m], p] = yb[m, p, lane] (+ bias) for m in [m0, m1), pixels p in
    [p_lo, p_hi): blocks of 16 pixels x 16 images through the register transpose; then the
    epilogue `epi` on each channel's runs while they are in cache."""
    n_img, channels, out_h, out_w = y.shape
    count = min(LANES, n_img - n0)
    yf = y.reshape(-1)
    p_total = out_h * out_w
    image = channels * p_total
    for m in range(m0, m1):
        out = channel[m]
        b = bias[out] if bias.shape[0] else yb.dtype.type(0)
        dst = n0 * image + out * p_total
        for p0 in range(p_lo, p_hi, LANES):
            span = min(LANES, p_hi - p0)
            transpose_block_add(yb, m * row + p0 * LANES, LANES, span, count, yf, dst + p0,
                                image, span, b)
        for lane in range(count):
            finish_run(yf, dst + lane * image + p_lo, p_hi - p_lo, out, epi)


@kernel(nogil=True)
def _pack_flat(x, n, c0, cg, chans, pad_h, pad_w, hp, wp, xb):
    """xb[c * hp * wp + r * wp + q] = image n, channel c0 + c (c0 + chans[c] where chans is
    not empty), padded; zeros after it."""
    _, channels, height, width = x.shape
    xf = x.reshape(-1)
    plane = hp * wp
    for i in range(cg * plane, xb.shape[0]):
        xb[i] = 0
    for c in range(cg):
        src0 = ((n * channels + c0 + (chans[c] if chans.size else c)) * height - pad_h) * width
        for r in range(hp):
            row = c * plane + r * wp
            h = r - pad_h
            if h < 0 or h >= height:
                for q in range(wp):
                    xb[row + q] = 0
                continue
            for q in range(pad_w):
                xb[row + q] = 0
            for q in range(pad_w + width, wp):
                xb[row + q] = 0
            src = src0 + r * width
            for q in range(width):
                xb[row + pad_w + q] = xf[src + q]


@kernel(nogil=True)
def _pack_phases(x, n, c0, cg, chans, pad_h, pad_w, sh, sw, hq, wq, xb):
    """xb[((c*sh + a)*sw + b) * hq*wq + r*wq + q] = image n, channel c0 + c (c0 + chans[c]
    where chans is not empty), padded, at
    (r*sh + a, q*sw + b); zeros where that is in the padding or past the image, and after
    the planes."""
    _, channels, height, width = x.shape
    xf = x.reshape(-1)
    plane = hq * wq
    for i in range(cg * sh * sw * plane, xb.shape[0]):
        xb[i] = 0
    for c in range(cg):
        image = (n * channels + c0 + (chans[c] if chans.size else c)) * height * width
        for a in range(sh):
            for b in range(sw):
                base = ((c * sh + a) * sw + b) * plane
                # the phase's columns q whose image column q*sw + b - pad_w is in the image
                q0 = min(wq, max(0, (pad_w - b + sw - 1) // sw))
                q1 = max(q0, min(wq, (width - 1 + pad_w - b) // sw + 1))
                for r in range(hq):
                    row = base + r * wq
                    h = r * sh + a - pad_h
                    if h < 0 or h >= height:
                        for q in range(wq):
                            xb[row + q] = 0
                        continue
                    for q in range(q0):
                        xb[row + q] = 0
                    for q in range(q1, wq):
                        xb[row + q] = 0
                    src = U(image + h * width + q0 * sw + b - pad_w)
                    dst = U(row + q0)
                    if sw == 2:         # a constant stride: LLVM's interleaved loads
                        for q in range(q1 - q0):
                            xb[dst + U(q)] = xf[src + U(2 * q)]
                    else:
                        for q in range(q1 - q0):
                            xb[dst + U(q)] = xf[src + U(q * sw)]


@njit(inline="always")
def _unpack_flat(yb, row, wp, n, m0, m1, channel, bias, epi, y):
    """y[n, channel[m], oy, ox] = yb[m, oy * wp + ox] (+ bias) for m in [m0, m1): row by row,
    unsigned offsets, so that each row's copy vectorizes (4-dimensional indexing kept it
    scalar: 3.6 floats per ns)."""
    _, channels, out_h, out_w = y.shape
    yf = y.reshape(-1)
    plane = out_h * out_w
    for m in range(m0, m1):
        out = channel[m]
        b = bias[out] if bias.shape[0] else yb.dtype.type(0)
        for oy in range(out_h):
            src = U(m * row + oy * wp)
            dst = U((n * channels + out) * plane + oy * out_w)
            for ox in range(out_w):
                yf[dst + U(ox)] = yb[src + U(ox)] + b
        finish_run(yf, (n * channels + out) * plane, plane, out, epi)


def _row_of_tiles(store, add, store_2, add_2, store_1, add_1):
    """The loop of one block of output channels over output vectors [v0, v1) on the given
    tiles: three vectors at a time, then one tile of two or one."""
    @njit(inline="always")
    def run(xb, pix, wg, ldw, taps, yb, v0, v1, k0, k1, first, row, w0, rows, y0):
        full = v1 - (v1 - v0) % VECTORS
        for t in range(v0, full, VECTORS):
            if first:
                store(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw, rows)
            else:
                add(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw, rows)
        t = full
        if v1 - full == 2:
            if first:
                store_2(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw,
                        rows)
            else:
                add_2(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw, rows)
        elif v1 - full == 1:
            if first:
                store_1(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw,
                        rows)
            else:
                add_1(xb, 0, pix, t, wg, w0, taps, k0, k1, yb, y0 + t * LANES, row, ldw, rows)
    return run


_full_run = _row_of_tiles(tile_store, tile_add, tile_store_2, tile_add_2, tile_store_1,
                          tile_add_1)
_half_run = _row_of_tiles(half_store, half_add, half_store_2, half_add_2, half_store_1,
                          half_add_1)


@kernel(nogil=True)
def _tile_run(xb, pix, wg, ldw, nrows, taps, yb, block, v0, v1, k0, k1, first):
    """One block of output channels over output vectors [v0, v1), taps [k0, k1); wg: the
    group's (nrows, ldw) weight, flat. A last block of at most HALF_ROWS channels runs the
    half-height tiles."""
    row = pix.shape[0] * LANES
    w0 = block * ROWS * ldw
    rows = min(ROWS, nrows - block * ROWS)
    y0 = block * ROWS * row
    if rows <= HALF_ROWS:
        _half_run(xb, pix, wg, ldw, taps, yb, v0, v1, k0, k1, first, row, w0, rows, y0)
    else:
        _full_run(xb, pix, wg, ldw, taps, yb, v0, v1, k0, k1, first, row, w0, rows, y0)


@njit(inline="always")
def _tiles(xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v_lo, v_hi, tap_bounds,
           pixel_chunk):
    """yb[m, .] for the output channels of blocks [block0, block1) and the output vectors
    [v_lo, v_hi): every tile, by blocks of taps [tap_bounds[i], tap_bounds[i + 1]) and
    chunks of outputs (module docstring). (Each chunk and block running all its tap blocks
    before the next, which keeps its part of yb in cache, measured the same on CaffeNet
    conv3, dense and at 50% and 90% sparsity.)"""
    blocks_of_taps = tap_bounds.shape[0] - 1
    for b in range(blocks_of_taps):
        for v0 in range(v_lo, v_hi, pixel_chunk):
            v1 = min(v_hi, v0 + pixel_chunk)
            for block in range(block0, block1):
                _tile_run(xb, pix, wg, ldw, nrows, taps, yb, block, v0, v1, tap_bounds[b],
                          tap_bounds[b + 1], b == 0)


# One work unit of the forward, one kernel per layout: image (block) n0's group packed into
# xb (unless `pack` is False: the worker's unit before packed the same), the tiles of output
# channel blocks [block0, block1), and their sums written to y. One call, so that a worker
# takes the GIL once per unit: with a call per step, the two workers of a small layer queued
# for the GIL between steps (miniVggNet's conv2 at batch 1: packing took 50 us on each
# worker instead of 19). A kernel per layout, so that a net compiles only the packings it
# uses: one kernel for all three added 2.7 s to LeNet's start with a cold Numba cache. The
# tiles and the write-backs are inlined into them (Numba links a called kernel's code into
# its caller and optimizes it again there: a separate _tiles cost 0.3 s more of that start).

@kernel(nogil=True)
def _unit_lanes(x, xb, wg, yb, bias, epi, y, n0, c0, cg, chans, pad_h, pad_w, sh, sw, hp, wp,
                pack, r0, r1, pix, ldw, nrows, taps, block0, block1, v0, v1, tap_bounds,
                pixel_chunk, channel):
    if pack:
        _pack_lanes(x, n0, c0, cg, chans, pad_h, pad_w, hp, wp, xb, r0, r1)
    _tiles(xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v0, v1, tap_bounds, pixel_chunk)
    _unpack_lanes(yb, pix.shape[0] * LANES, n0, block0 * ROWS, min(nrows, block1 * ROWS), v0,
                  v1, channel, bias, epi, y)


@kernel(nogil=True)
def _unit_flat(x, xb, wg, yb, bias, epi, y, n0, c0, cg, chans, pad_h, pad_w, sh, sw, hp, wp,
               pack, r0, r1, pix, ldw, nrows, taps, block0, block1, v0, v1, tap_bounds,
               pixel_chunk, channel):
    # the flat and phase layouts are always packed whole: _outputs_pay splits only lanes
    if pack:
        _pack_flat(x, n0, c0, cg, chans, pad_h, pad_w, hp, wp, xb)
    _flat_tiles(wp, n0, xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v0, v1, tap_bounds,
                pixel_chunk, channel, bias, epi, y)


@kernel(nogil=True)
def _unit_phases(x, xb, wg, yb, bias, epi, y, n0, c0, cg, chans, pad_h, pad_w, sh, sw, hp,
                 wp, pack, r0, r1, pix, ldw, nrows, taps, block0, block1, v0, v1, tap_bounds,
                 pixel_chunk, channel):
    if pack:
        _pack_phases(x, n0, c0, cg, chans, pad_h, pad_w, sh, sw, hp, wp, xb)
    _flat_tiles(wp, n0, xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v0, v1, tap_bounds,
                pixel_chunk, channel, bias, epi, y)


@njit(inline="always")
def _flat_tiles(wp, n0, xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v0, v1, tap_bounds,
                pixel_chunk, channel, bias, epi, y):
    _tiles(xb, pix, wg, ldw, nrows, taps, yb, block0, block1, v0, v1, tap_bounds, pixel_chunk)
    _unpack_flat(yb, pix.shape[0] * LANES, wp, n0, block0 * ROWS, min(nrows, block1 * ROWS),
                 channel, bias, epi, y)


class _Group(NamedTuple):
    """One group's filters as the tiles use them: the output channels computed (indices
    into the layer's M), the taps read (indices into C/g*kh*kw), the blocks of taps
    (_tap_bounds) and the weight, (len(channels), len(taps)) C-contiguous, flat."""
    channels: np.ndarray
    taps: np.ndarray
    tap_bounds: np.ndarray
    blocks: int
    weight: np.ndarray


def _tap_bounds(cols, kk):
    """Where blocks of taps start: every TAP_BLOCK taps, and wherever the input channel
    passes a multiple of TAP_BLOCK // kk, so that a block reads about a dense block's rows
    of the image (the kept taps of a compacted weight spread over every channel: in blocks
    of 512 of them, CaffeNet conv3's at 90% column sparsity read its whole 3.7 MB image
    block per tap block, and the tiles ran at 135 GFLOP/s on one core)."""
    span = max(1, TAP_BLOCK // kk)
    crossings = np.flatnonzero(np.diff(cols // kk // span)) + 1
    starts = np.union1d(crossings, np.arange(0, len(cols), TAP_BLOCK))
    return np.append(starts, len(cols)).astype(np.int64)


def pack_groups(w, group, kept=None):
    """_Group per group of the weight w (M, C/g, kh, kw). `kept`, per group, (rows, columns,
    compacted weight) of the group's (M/g, C/g*kh*kw) matrix as kernels/sparse.py's
    `compact` gives them: the tiles then compute only those rows from those taps
    (LOWERED_CCNMM's products without lowering); the other rows are the bias alone. A
    C-contiguous float32 weight is used in place, not copied."""
    w3 = np.ascontiguousarray(w, np.float32).reshape(group, w.shape[0] // group, -1)
    if kept is None:
        return [_Group(gr.channels, gr.taps, gr.tap_bounds, gr.blocks, wg.reshape(-1))
                for gr, wg in zip(_dense_groups(w.shape, group), w3)]
    mg, kk = w3.shape[1], w.shape[2] * w.shape[3]
    return [_group(rows + g * mg, cols, kk, np.ascontiguousarray(wg, np.float32).reshape(-1))
            for g, (rows, cols, wg) in enumerate(kept)]


@lru_cache(maxsize=256)
def _dense_groups(w_shape, group):
    """The _Groups of a dense weight of this shape, without the weight itself: the part a
    forward would otherwise rebuild at every call."""
    mg, k = w_shape[0] // group, int(np.prod(w_shape[1:]))
    return [_group(np.arange(mg) + g * mg, np.arange(k), w_shape[2] * w_shape[3], None)
            for g in range(group)]


def _group(channels, cols, kk, weight):
    cols = np.asarray(cols, np.int64)
    return _Group(np.asarray(channels, np.int64), cols, _tap_bounds(cols, kk),
                  -(-len(channels) // ROWS), weight)


class _Plan(NamedTuple):
    """How one pass over a convolution's batch goes: each worker's share of the work units
    (_units or _output_shares), each unit (layout, first image, group, first block, end
    block, first output vector, end vector)."""
    cg: int                 # input channels per group
    mg: int                 # output channels per group
    shares: list            # per worker, its units
    x_size: int             # floats of the largest padded image (block) of a unit
    row: int                # floats per output channel of the largest tile buffer


def _plan(x_shape, y_shape, geo, macs, blocks, taps=None):
    """Whole blocks of LANES images run in the lanes layout, the images after them flat;
    one worker below TILES_SPLIT_MIN_MACS multiply-adds. `blocks`: per group, its blocks of
    ROWS output channels. `taps` (the forward's): per group, the taps its tiles read; the
    workers may then split outputs instead of output channels (_outputs_pay). Kept per
    shape: at batch 1 the planning cost as much as a small layer's tiles."""
    workers = 1 if macs < TILES_SPLIT_MIN_MACS else batch_workers()
    return _plan_for(tuple(x_shape), tuple(y_shape), geo, tuple(blocks), workers,
                     None if taps is None else tuple(taps))


@lru_cache(maxsize=256)
def _plan_for(x_shape, y_shape, geo, blocks, workers, taps=None):
    n_img, channels, height, width = x_shape
    m_out, out_h, out_w = y_shape[1:]
    cg, mg = channels // geo.group, m_out // geo.group
    strided = geo.stride_h != 1 or geo.stride_w != 1
    whole = 0 if strided else n_img - n_img % LANES
    starts = []
    if whole:
        lanes = _Layout(True, cg, height, width, out_h, out_w, geo)
        starts += [(lanes, n0) for n0 in range(0, whole, LANES)]
    if whole < n_img:
        flat = _Layout(False, cg, height, width, out_h, out_w, geo)
        starts += [(flat, n0) for n0 in range(whole, n_img)]
    layouts = {layout for layout, _ in starts}
    shares = _shares(_units(starts, blocks, workers), workers)
    if taps is not None and not strided and _outputs_pay(starts, blocks, taps, shares, workers):
        shares = _output_shares(starts, blocks, workers)
    return _Plan(cg, mg, shares, max(layout.x_size for layout in layouts),
                 max(layout.row for layout in layouts))


def _units(starts, blocks, workers):
    """Work units of whole (image, group) pairs, split over the output channels too when
    there are fewer pairs than workers."""
    pairs = [(layout, n0, g) for layout, n0 in starts for g in range(len(blocks))]
    pieces = -(-workers // len(pairs))
    units = []
    for layout, n0, g in pairs:
        cut = min(blocks[g], pieces)
        bounds = [blocks[g] * s // cut for s in range(cut + 1)] if cut else []
        units += [(layout, n0, g, lo, hi, 0, len(layout.pix))
                  for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    return units


def _cost(unit):
    """What a unit's tiles compute, in vectors of ROWS sums."""
    _, _, _, b0, b1, v0, v1 = unit
    return (b1 - b0) * (v1 - v0)


#: most a worker's share may pass the mean before the workers split outputs instead
UNEVEN_SHARES = 1.05


def _outputs_pay(starts, blocks, taps, shares, workers):
    """Whether the workers should split each (image, group) pair's outputs rather than its
    output channels: where the pairs are fewer than the workers, so that each would pack
    the whole image (CaffeNet conv3 at batch 16: 0.225 ms), or the whole pairs split
    unevenly (a compacted weight's groups of 9 and 8 blocks; a compacted conv3 of 5 blocks
    went 3 to 2), and the weight a worker then reads in full is smaller than the image it
    would pack (at batch 1 the weights of large layers are 10-50 times their image)."""
    if workers < 2 or not shares or not all(layout.lanes for layout, _ in starts):
        return False
    costs = [sum(_cost(unit) for unit in share) for share in shares]
    uneven = max(costs) * workers > UNEVEN_SHARES * sum(costs)
    if len(starts) * len(blocks) >= workers and not uneven:
        return False
    weight = max(b * ROWS * t for b, t in zip(blocks, taps))
    return weight <= min(layout.x_size for layout, _ in starts)


def _output_shares(starts, blocks, workers):
    """Per worker, its units: the pairs' work laid end to end and cut into equal parts at
    output vectors. Each worker computes every output channel of its outputs and packs only
    the image rows those read (_Layout.rows)."""
    pairs = [(layout, n0, g) for layout, n0 in starts for g in range(len(blocks)) if blocks[g]]
    total = sum(blocks[g] * len(layout.pix) for layout, _, g in pairs)
    cuts = [total * w // workers for w in range(workers + 1)]
    shares = [[] for _ in range(workers)]
    start = 0
    for layout, n0, g in pairs:
        vectors = len(layout.pix)

        def at(cut):            # the vector where a cut falls in this pair, rounded
            return min(vectors, max(0, (cut - start + blocks[g] // 2) // blocks[g]))

        for w in range(workers):
            v0, v1 = at(cuts[w]), at(cuts[w + 1])
            if v1 > v0:
                shares[w].append((layout, n0, g, 0, blocks[g], v0, v1))
        start += blocks[g] * vectors
    return [share for share in shares if share]


def _shares(units, workers):
    """Consecutive runs of units, one per worker, balanced on the vectors their tiles
    compute: a flat image costs a fraction of a block of LANES images (cifar10_quick's
    batch of 100, six blocks and four flat images, split by count left one core idle).
    Each cut is the boundary between units nearest to its share of the total. (The last
    boundary at or below it gave the first worker nothing where the first unit was over
    half: LOWERED_CCNMM's compacted groups of 9 and 8 blocks, CaffeNet conv2 with half its
    filters zero, ran on one core, 0.95x dense instead of 1.8x.)"""
    if not units:
        return []
    cost = np.cumsum([_cost(unit) for unit in units])
    bounds = np.concatenate(([0], cost))
    cuts = [0] + [int(np.abs(bounds - cost[-1] * i / workers).argmin())
                  for i in range(1, workers)] + [len(units)]
    return [units[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


class _Job(NamedTuple):
    """One pass's work without the call's arrays: per worker, its units as (kernel, layout's
    padded image floats, group, the kernel's arguments after the arrays), and the tile
    buffer's floats. Kept per shape for a dense weight: making the arguments took 11 us of
    Python per call, a tenth of a small layer's pass at batch 1."""
    macs: int
    parts: list
    y_size: int


def _job(x_shape, y_shape, geo, groups, workers, macs):
    # the taps only matter to a block of LANES images (_outputs_pay)
    taps = [len(gr.taps) for gr in groups] if x_shape[0] >= LANES else None
    cg, _, shares, _, row = _plan_for(x_shape, y_shape, geo, tuple(gr.blocks for gr in groups),
                                      workers, None if taps is None else tuple(taps))
    kk = geo.kernel_h * geo.kernel_w
    inputs = [_inputs_read(gr.taps, kk, cg) for gr in groups]
    tables = {}
    for layout, _, g, _, _, _, _ in chain(*shares):
        if (layout, g) not in tables:
            kept, at = groups[g].taps, inputs[g][1]
            # every tap kept (a dense weight): the layout's own table, without a copy
            tables[layout, g] = layout.taps if len(kept) == len(layout.taps) else \
                layout.taps[at[kept // kk] * kk + kept % kk]
    parts = []
    for share in shares:
        packed = None
        part = []
        for layout, n0, g, b0, b1, v0, v1 in share:
            gr = groups[g]
            rows = layout.rows(v0, v1) if layout.lanes else (0, layout.hp)
            chans = inputs[g][0]
            part.append((layout.unit, layout.x_size, g, (
                n0, g * cg, len(chans) or cg, chans, *layout.pads, *layout.strides, layout.hp,
                layout.wp,
                packed != (n0, g), *rows, layout.pix, len(gr.taps), len(gr.channels),
                tables[layout, g], b0, b1, v0, v1, gr.tap_bounds, PIXEL_CHUNK, gr.channels)))
            packed = (n0, g)
        parts.append(part)
    return _Job(macs, parts, max(gr.blocks for gr in groups) * ROWS * row)


def _inputs_read(taps, kk, cg):
    """(chans, at) of a group whose tiles read `taps` (indices into cg*kk): the input
    channels they read, ascending, which alone are packed, and each channel's place among
    them; (ALL_CHANNELS, an identity) where they read every channel. An all-zero column
    block of a compacted weight (a channel that the layer before pruned by rows) is then
    neither packed nor read."""
    read = np.unique(np.asarray(taps, np.int64) // kk)
    if len(read) == cg:
        return ALL_CHANNELS, np.arange(cg, dtype=np.int64)
    at = np.zeros(cg, np.int64)
    at[read] = np.arange(len(read))
    return read, at


@lru_cache(maxsize=256)
def _dense_job(x_shape, y_shape, geo, w_shape, workers, macs):
    return _job(x_shape, y_shape, geo, _dense_groups(w_shape, geo.group), workers, macs)


_NO_BIAS = np.empty(0, np.float32)
_F32 = np.dtype(np.float32)


def blocked_conv_forward(x, w, bias, geo, y, groups=None, epilogue=None):
    """y (N, M, OH, OW) = conv(x, w) + bias (or None) on tiles (see `applies`), then a
    ChannelEpilogue (None: none) on each run of outputs as a tile writes it. `groups`:
    pack_groups(w, ...) when the caller keeps it (a compacted weight), else w is dense."""
    _check(x, w, geo, y)
    x = np.ascontiguousarray(x)
    bias = _NO_BIAS if bias is None else np.ascontiguousarray(bias, np.float32)
    epi = ChannelEpilogue.none(_F32) if epilogue is None else epilogue.args
    if groups is None:
        weights = np.ascontiguousarray(w, np.float32).reshape(geo.group, -1)
        macs = y.shape[0] * y.shape[2] * y.shape[3] * w.size
        workers = 1 if macs < TILES_SPLIT_MIN_MACS else batch_workers()
        job = _dense_job(x.shape, y.shape, geo, w.shape, workers, macs)
    else:
        weights = [gr.weight for gr in groups]
        macs = y.shape[0] * y.shape[2] * y.shape[3] * sum(
            len(gr.channels) * len(gr.taps) for gr in groups)
        workers = 1 if macs < TILES_SPLIT_MIN_MACS else batch_workers()
        job = _job(x.shape, y.shape, geo, groups, workers, macs)
    out = y if y.flags.c_contiguous else np.empty(y.shape, np.float32)
    dropped, values = _NONE_DROPPED if groups is None else _dropped(groups, bias, out, epilogue)
    # every unit's arguments made before the parts are handed over (part i runs on worker
    # i: split_batch gets at most one part per worker), so that each worker holds the GIL
    # only to call its units: a worker waiting for a GIL that its caller holds in Python
    # sleeps, and on these VMs waking it took 25-30 us (miniVggNet's conv2 at batch 1: the
    # second worker started 35 us after the first, with the tiles' whole layer 140 us)
    calls = []
    for worker, part in enumerate(job.parts):
        ws = workspace(worker)
        yb = ws.flat("blocked_y", job.y_size, _F32)
        calls.append([(unit, (x, ws.flat("blocked_x", x_size, _F32), weights[g], yb, bias, epi,
                              out) + rest) for unit, x_size, g, rest in part])

    if not job.macs:
        calls = [[]]            # no filter kept: one part fills every channel
    parts, n_img = len(calls), out.shape[0]

    def work(worker, lo, hi):
        for i in range(lo, hi):
            for unit, args in calls[i]:
                unit(*args)
            if len(dropped):
                _fill_channels(out, dropped, values, n_img * i // parts,
                               n_img * (i + 1) // parts)

    if len(calls) > 1:
        split_batch(len(calls), work)
    else:
        work(0, 0, 1)           # one worker: no hand-over, and the units call no BLAS
    if out is not y:
        y[...] = out
    return y


_NONE_DROPPED = (np.empty(0, np.int64), np.empty(0, np.float32))


def _dropped(groups, bias, y, epilogue):
    """(channels, values): the output channels no tile computes (all-zero filters) and the
    value each holds, its bias or 0, through the epilogue (None: none). The workers fill
    them for their share of the images (_fill_channels): at 90% row sparsity that is 90% of
    the output, which NumPy wrote on one core (CaffeNet conv2 at batch 16: 0.29 ms, 0.47
    with the output out of cache)."""
    if sum(len(gr.channels) for gr in groups) == y.shape[1]:
        return _NONE_DROPPED    # channels are distinct, so every one is computed
    computed = np.zeros(y.shape[1], bool)
    for gr in groups:
        computed[gr.channels] = True
    dropped = np.flatnonzero(~computed)
    values = bias if bias.shape[0] else np.zeros(y.shape[1], np.float32)
    if epilogue is not None:
        values = epilogue.of_values(values)
    return dropped, np.ascontiguousarray(values[dropped], np.float32)


@kernel(nogil=True)
def _fill_channels(y, channels, values, n0, n1):
    """y[n, channels[i]] = values[i] for the images n in [n0, n1)."""
    _, m, out_h, out_w = y.shape
    plane = out_h * out_w
    yf = y.reshape(-1)
    for n in range(n0, n1):
        for i in range(channels.shape[0]):
            start = U((n * m + channels[i]) * plane)
            v = values[i]
            for p in range(plane):
                yf[start + U(p)] = v
