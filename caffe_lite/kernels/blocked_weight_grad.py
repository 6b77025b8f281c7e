"""The weight and bias gradients of a convolution on register-blocked tiles, in the layouts
of kernels/blocked_conv.py (a strided one on its stride's phases), without lowering.

    dw[m, c, ki, kj] += sum over n, oy, ox of
                        dy[n, m, oy, ox] * xpad[n, c, oy*sh + ki*dh, ox*sw + kj*dw]
    db[m]            += sum over n, oy, ox of dy[n, m, oy, ox]

dy is laid out as the forward's output tile buffer (lanes: dy[m, p, lane], 16 images per
vector; flat: one image on rows of the phase's width, the positions past each output row
zero), and the padded image as the forward's input (a strided layer's in its phases, where
each tap is read at a fixed offset, as in the forward). A tile (vector_tile.grad_tile) holds
four output channels x six taps of sums in registers while it runs over a chunk of output
positions: each step loads four vectors of dy and six of the image for 24 FMAs. At the
end it adds each sum's sixteen lanes in a fixed tree onto a per-worker float32 buffer;
the workers' buffers are then added in worker order, so results do not depend on timing.

Summation order (against the lowered GEMM's): per (image block, group) and chunk of
POSITION_CHUNK positions, over the positions in order within each lane, then the lanes in
a tree; the chunks, then image blocks, in order; then the workers.
Equal to float32 rounding over N*OH*OW terms.
"""
from itertools import chain

import numpy as np

from .blocked_conv import ALL_CHANNELS, _pack_lanes, _plan
from .conv import _check
from .gemm import split_batch, workspace
from .jit import kernel
from .vector_tile import GRAD_ROWS, GRAD_TAPS, ROWS, grad_tile, grad_tile_1, grad_tile_3


@kernel(nogil=True)
def _pack_dy_flat(dy, n, m0, mg, row, wp, dyb):
    """dyb[m, oy * wp + ox] = dy[n, m0 + m, oy, ox]; zeros elsewhere."""
    _, _, out_h, out_w = dy.shape
    for i in range(dyb.shape[0]):
        dyb[i] = 0
    for m in range(mg):
        for oy in range(out_h):
            base = m * row + oy * wp
            for ox in range(out_w):
                dyb[base + ox] = dy[n, m0 + m, oy, ox]


#: output positions per pass over a tile's taps: the pass's dy, GRAD_ROWS x 64 vectors
#: (16 KB), and the image vectors of six taps (24 KB) stay in L1
POSITION_CHUNK = 64


@kernel(nogil=True)
def _grad_tiles(xb, pix, positions, taps, dyb, row, dwp, block0, block1, chunk):
    """dwp[m, k] += the tiles' sums for the output channels of blocks [block0, block1),
    `chunk` positions at a time."""
    k = taps.shape[0]
    full = k - k % GRAD_TAPS
    for p0 in range(0, positions, chunk):
        p1 = min(positions, p0 + chunk)
        for r0 in range(block0 * ROWS, block1 * ROWS, GRAD_ROWS):
            y0 = r0 * row
            d0 = r0 * k
            for t in range(0, full, GRAD_TAPS):
                grad_tile(xb, pix, p0, p1, taps, t, dyb, y0, row, dwp, d0 + t, k)
            t = full
            if k - t >= 3:          # 3x3 filters of an odd channel count, 5x5 of three
                grad_tile_3(xb, pix, p0, p1, taps, t, dyb, y0, row, dwp, d0 + t, k)
                t += 3
            for t in range(t, k):
                grad_tile_1(xb, pix, p0, p1, taps, t, dyb, y0, row, dwp, d0 + t, k)


def _row_sums(dyb, row, m0, m1, db):
    """db[m] += the sum of row m of the tile buffer (its zero padding adds nothing),
    NumPy's pairwise float32 sum (a kernel's compile would add 0.3 s to a cold start)."""
    if m1 > m0:
        db[m0:m1] += dyb[m0 * row:m1 * row].reshape(m1 - m0, row).sum(axis=1)


def blocked_weight_grad(x, dy, geo, dw, db=None):
    """dw (M, C/g, kh, kw) += and db (M,) += the gradients above (db: None to skip), for a
    convolution on tiles (see blocked_conv.weight_grad_applies)."""
    _check(x, dw, geo, dy)
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, np.float32)
    group = geo.group
    k = x.shape[1] // group * geo.kernel_h * geo.kernel_w
    mg = dy.shape[1] // group
    blocks = -(-mg // ROWS)
    cg, _, shares, x_size, row = _plan(x.shape, dy.shape, geo, dy.size * k, [blocks] * group)

    m_out = dy.shape[1]

    def work(worker, lo, hi):
        ws = workspace(worker)
        xb = ws.get("blocked_x", (x_size,), np.float32)
        dyb = ws.get("blocked_dy", (blocks * ROWS * row,), np.float32)
        part = ws.zeros("blocked_dw", (group, blocks * ROWS * k), np.float32)
        part_db = ws.zeros("blocked_db", (m_out,), np.float32)
        packed = None
        for layout, n0, g, b0, b1, _, _ in chain(*shares[lo:hi]):
            size = blocks * ROWS * layout.row
            if packed != (n0, g):
                packed = (n0, g)
                layout.pack(x, n0, g * cg, cg, xb)
                if layout.lanes:
                    # dy[m, p, lane] is the lanes layout of dy's planes without padding;
                    # the rows past mg, read by the last block's tiles, are zeros
                    _pack_lanes(dy, n0, g * mg, mg, ALL_CHANNELS, 0, 0, dy.shape[2],
                                dy.shape[3], dyb, 0, dy.shape[2])
                    dyb[mg * layout.row:size] = 0
                else:
                    _pack_dy_flat(dy, n0, g * mg, mg, layout.row, layout.wp, dyb[:size])
            positions = dy.shape[2] * dy.shape[3] if layout.lanes else len(layout.pix)
            _grad_tiles(xb, layout.pix, positions, layout.taps, dyb, layout.row, part[g],
                        b0, b1, POSITION_CHUNK)
            if db is not None:
                _row_sums(dyb, layout.row, b0 * ROWS, min(mg, b1 * ROWS), part_db[g * mg:])
        return part, part_db

    parts = split_batch(len(shares), work)
    total, total_db = parts[0]
    for part, part_db in parts[1:]:
        total += part
        total_db += part_db
    dw += total.reshape(group, blocks * ROWS, k)[:, :mg].reshape(dw.shape)
    if db is not None:
        db += total_db
