"""kernels/lane_transpose.py and the lanes layout's packing and unpacking built on it
(kernels/blocked_conv.py): every value moved bit for bit (NaN payloads and -0.0 included),
nothing written outside its place, over partial blocks of images and of pixels.

The masked moves run on any x86 CPU (LLVM emulates them where AVX-512 is missing)."""
import numpy as np
import pytest
from numba import njit

from caffe_lite.kernels.blocked_conv import ALL_CHANNELS, LANES, _pack_lanes, _unpack_lanes
from caffe_lite.kernels.channel_epilogue import ChannelEpilogue
from caffe_lite.kernels.lane_transpose import transpose_block, transpose_block_add


@njit(cache=True)
def _transpose(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out):
    transpose_block(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out)


@njit(cache=True)
def _transpose_add(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out, add):
    transpose_block_add(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out, add)


def _odd_bits(rng, size):
    """Random floats with NaNs of several payloads, -0.0 and infinities among them."""
    a = rng.standard_normal(size).astype(np.float32)
    bits = a.view(np.uint32)
    specials = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000, 0xFF800000],
                        np.uint32)
    at = rng.choice(size, size // 8, replace=False)
    bits[at] = rng.choice(specials, len(at))
    return a


@pytest.mark.parametrize("rows_in,cols_in,cols_out", [
    (16, 16, 16), (13, 16, 16), (16, 13, 16), (5, 7, 9), (16, 16, 3), (1, 1, 1), (0, 4, 16),
    (4, 0, 16)])
@pytest.mark.parametrize("with_add", [False, True])
def test_block_moves_each_value_and_writes_nothing_else(rows_in, cols_in, cols_out, with_add):
    rng = np.random.default_rng(rows_in * 100 + cols_in)
    s0, s_ld, d0, d_ld = 3, 21, 5, 18
    src = _odd_bits(rng, s0 + 16 * s_ld)
    dst = np.full(d0 + 16 * d_ld + 7, 7.5, np.float32)
    ref = dst.copy()
    add = np.float32(0.25)
    for j in range(cols_in):
        for i in range(cols_out):
            value = src[s0 + i * s_ld + j] if i < rows_in else np.float32(0)
            ref[d0 + j * d_ld + i] = value + add if with_add else value
    if with_add:
        _transpose_add(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out, add)
    else:
        _transpose(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out)
    assert np.array_equal(dst.view(np.uint32), ref.view(np.uint32))


def _padded_lanes(x, n0, c0, cg, pad_h, pad_w):
    """The lanes layout by NumPy: xb[c, r, q, lane], zeros in the pads and missing images."""
    block = np.zeros((LANES, cg) + x.shape[2:], np.float32)
    part = x[n0:n0 + LANES, c0:c0 + cg]
    block[:len(part)] = part
    padded = np.pad(block, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    return np.ascontiguousarray(padded.transpose(1, 2, 3, 0)).reshape(-1)


@pytest.mark.parametrize("n,n0", [(16, 0), (21, 16), (40, 32), (3, 0)])
@pytest.mark.parametrize("height,width,pad_h,pad_w", [
    (13, 13, 1, 1), (5, 37, 2, 0), (8, 8, 0, 0), (4, 17, 0, 2), (1, 1, 1, 1), (28, 28, 0, 0)])
@pytest.mark.parametrize("part", ["whole", "top", "middle", "bottom"])
def test_pack_lanes_equals_numpy(n, n0, height, width, pad_h, pad_w, part):
    """The padded rows [r0, r1) of every channel, and nothing else (a worker that splits
    outputs packs only the rows its outputs read)."""
    rng = np.random.default_rng(n * 1000 + width)
    x = _odd_bits(rng, n * 5 * height * width).reshape(n, 5, height, width)
    c0, cg = 1, 3
    hp, wp = height + 2 * pad_h, width + 2 * pad_w
    r0, r1 = {"whole": (0, hp), "top": (0, (hp + 1) // 2), "middle": (hp // 3, hp - hp // 3),
              "bottom": (hp // 2, hp + 2)}[part]          # r1 past the plane: clipped
    ref = _padded_lanes(x, n0, c0, cg, pad_h, pad_w).reshape(cg, hp, wp * LANES)
    xb = np.full(ref.size + 40, 3.0, np.float32)
    _pack_lanes(x, n0, c0, cg, ALL_CHANNELS, pad_h, pad_w, hp, wp, xb, r0, r1)
    planes = xb[:ref.size].reshape(ref.shape)
    assert np.array_equal(planes[:, r0:r1].view(np.uint32), ref[:, r0:r1].view(np.uint32))
    assert np.all(planes[:, :r0] == 3.0) and np.all(planes[:, r1:] == 3.0)
    assert np.all(xb[ref.size:] == 3.0)


@pytest.mark.parametrize("n,n0", [(16, 0), (21, 16), (3, 0)])
@pytest.mark.parametrize("out_h,out_w", [(13, 13), (1, 1), (4, 5), (24, 24)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("part", ["whole", "from 7"])
def test_unpack_lanes_equals_numpy(n, n0, out_h, out_w, with_bias, part):
    """Pixels [p0, p1) of channels [m0, m1); the rest of y untouched."""
    rng = np.random.default_rng(n * 100 + out_w)
    channels, m0, m1 = 6, 1, 4
    channel = np.array([5, 0, 3, 2, 1, 4], np.int64)
    pixels = out_h * out_w
    row = -(-pixels // 3) * 3 * LANES        # a tile buffer's row, rounded past the pixels
    yb = _odd_bits(rng, channels * row)
    bias = rng.standard_normal(channels).astype(np.float32) if with_bias else \
        np.empty(0, np.float32)
    y = np.full((n, channels, out_h, out_w), 9.0, np.float32)
    ref = y.copy()
    count = min(LANES, n - n0)
    p0 = 0 if part == "whole" else min(7, pixels - 1)
    for m in range(m0, m1):
        sums = yb[m * row:m * row + pixels * LANES].reshape(pixels, LANES)[:, :count].T
        add = bias[channel[m]] if with_bias else np.float32(0)
        ref[n0:n0 + count, channel[m]].reshape(count, -1)[:, p0:] = (sums + add)[:, p0:]
    _unpack_lanes(yb, row, n0, m0, m1, p0, pixels, channel, bias, ChannelEpilogue.none(y.dtype),
                  y)
    assert np.array_equal(y.view(np.uint32), ref.view(np.uint32))
