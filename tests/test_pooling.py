"""Pooling against a naive NumPy oracle, Caffe's output-size rules, and gradient checks."""
import math

import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, make_layer
from caffe_lite.common import TEST, set_random_seed
from caffe_lite.errors import CaffeError
from caffe_lite import threads
from caffe_lite.kernels import neuron
from caffe_lite.kernels import pooling as P
from caffe_lite.kernels.pooling import FLT_MAX, pooled_size


def oracle_size(size, k, p, s, ceil=True):
    q = (size + 2 * p - k) / s
    out = (math.ceil(q) if ceil else math.floor(q)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def oracle_pool(x, kh, kw, sh, sw, ph, pw, method, ceil=True):
    n, c, h, w = x.shape
    oh, ow = oracle_size(h, kh, ph, sh, ceil), oracle_size(w, kw, pw, sw, ceil)
    y = np.zeros((n, c, oh, ow))
    idx = np.full((n, c, oh, ow), -1)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            area = (h1 - h0) * (w1 - w0)
            a0, b0, a1, b1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            win = x[:, :, a0:a1, b0:b1]
            if method == "MAX":
                flat = win.reshape(n, c, -1)
                k = flat.argmax(axis=2)
                y[:, :, i, j] = flat.max(axis=2)
                idx[:, :, i, j] = (a0 + k // (b1 - b0)) * w + b0 + k % (b1 - b0)
            else:
                y[:, :, i, j] = win.sum(axis=(2, 3)) / area
    return y, idx


def spaced(shape, seed):
    """Distinct values at least 0.05 apart, so argmax never flips under a small step."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - 20) * 0.05


def text(method, extra):
    return f'name: "p" type: "Pooling" top: "y" pooling_param {{ pool: {method} {extra} }}'


@pytest.mark.parametrize("size,k,p,s,ceil,expect", [
    (6, 3, 0, 2, True, 3),    # ceil(1.5) + 1
    (6, 3, 0, 2, False, 2),
    (5, 2, 1, 2, True, 3),    # ceil(2.5)+1 = 4, last window starts in the pad: dropped
    (5, 2, 1, 2, False, 3),
    (7, 3, 1, 2, True, 4),
    (4, 3, 2, 3, True, 2),    # ceil(5/3)+1 = 3; (3-1)*3 = 6 >= 4+2: dropped
    (13, 3, 0, 2, True, 6),
    (1, 1, 0, 1, True, 1),
])
def test_pooled_size(size, k, p, s, ceil, expect):
    assert pooled_size(size, k, p, s, ceil) == expect == oracle_size(size, k, p, s, ceil)


GRID = [  # (shape, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)
    ((2, 3, 7, 6), 3, 3, 2, 2, 0, 0),
    ((2, 3, 7, 6), 3, 3, 2, 2, 1, 1),
    ((1, 2, 5, 5), 2, 2, 2, 2, 1, 1),
    ((2, 2, 9, 8), 3, 2, 3, 1, 1, 0),
    ((1, 3, 6, 7), 4, 3, 1, 2, 2, 1),
    ((3, 1, 4, 4), 4, 4, 1, 1, 0, 0),
    ((1, 2, 13, 11), 3, 3, 3, 3, 1, 1),
    # the MAX kernel's fast paths: 1x1, 2x2 and 3x3 windows, odd sizes, with and without pad
    ((2, 3, 7, 5), 1, 1, 2, 2, 0, 0),
    ((2, 3, 7, 5), 1, 1, 1, 1, 0, 0),
    ((2, 2, 9, 7), 2, 2, 2, 2, 0, 0),
    ((2, 2, 9, 7), 2, 2, 1, 1, 1, 1),
    ((2, 2, 11, 9), 3, 3, 2, 2, 0, 0),
    ((2, 2, 11, 9), 3, 3, 1, 1, 1, 1),
]


def _geometry_text(kh, kw, sh, sw, ph, pw):
    return (f"kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} "
            f"pad_h: {ph} pad_w: {pw}")


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", GRID)
def test_forward_and_gradient(method, case):
    shape, kh, kw, sh, sw, ph, pw = case
    x = spaced(shape, 1)
    layer, bottom, top = make_layer(text(method, _geometry_text(kh, kw, sh, sw, ph, pw)), [x])
    layer.forward(bottom, top)
    want, idx = oracle_pool(x, kh, kw, sh, sw, ph, pw, method)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("ceil", [True, False])
def test_round_mode(ceil):
    x = spaced((1, 2, 8, 7), 2)
    mode = "CEIL" if ceil else "FLOOR"
    layer, bottom, top = make_layer(text("AVE", f"kernel_size: 3 stride: 2 round_mode: {mode}"),
                                    [x])
    layer.forward(bottom, top)
    want, _ = oracle_pool(x, 3, 3, 2, 2, 0, 0, "AVE", ceil)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)


def test_ave_divides_by_padded_window():
    # Caffe: pool_size uses hend = min(hstart + k, H + pad) before clipping to H
    x = np.ones((1, 1, 3, 3))
    layer, bottom, top = make_layer(text("AVE", "kernel_size: 3 stride: 2 pad: 1"), [x])
    layer.forward(bottom, top)
    # every window spans a 3x3 area of the padded image, 2x2 of it real
    np.testing.assert_allclose(top[0].data[0, 0], [[4 / 9, 4 / 9], [4 / 9, 4 / 9]])


def test_max_mask_top_and_backward_from_it():
    x = spaced((2, 2, 7, 5), 3)
    layer, bottom, top = make_layer(text("MAX", "kernel_size: 3 stride: 2 pad: 1"), [x], ntop=2)
    layer.forward(bottom, top)
    _, idx = oracle_pool(x, 3, 3, 2, 2, 1, 1, "MAX")
    np.testing.assert_array_equal(top[1].data, idx)
    check_gradient(layer, bottom, top, check_bottom=[0])
    # backward reads the mask from the second top, as Caffe does
    top[0].diff[...] = 1
    top[1].data[...] = 0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff[:, :, 0, 0].min() > 0 and bottom[0].diff.sum() == top[0].count


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = spaced((2, 3, 5, 4), 4)
    layer, bottom, top = make_layer(text(method, "global_pooling: true"), [x])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 1, 1)
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-12)
    check_gradient(layer, bottom, top)
    # the kernel follows the input size on reshape
    bottom[0].reshape((1, 3, 3, 6))
    bottom[0].data[...] = spaced((1, 3, 3, 6), 5)
    layer.forward(bottom, top)
    assert top[0].shape == (1, 3, 1, 1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_exhaustive_tiny(method):
    x = spaced((1, 2, 4, 3), 6)
    layer, bottom, top = make_layer(text(method, "kernel_size: 2 stride: 1 pad: 1"), [x])
    check_gradient_exhaustive(layer, bottom, top)


def test_float32_matches_float64():
    x = spaced((2, 3, 9, 7), 7)
    outs = []
    for dtype in (np.float32, np.float64):
        layer, bottom, top = make_layer(text("AVE", "kernel_size: 3 stride: 2 pad: 1"), [x],
                                        dtype=dtype)
        layer.forward(bottom, top)
        assert top[0].data.dtype == dtype
        outs.append(top[0].data.astype(np.float64))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def test_stochastic_test_phase():
    x = np.abs(spaced((2, 2, 6, 5), 8)) + 0.1
    layer, bottom, top = make_layer(text("STOCHASTIC", "kernel_size: 3 stride: 2"), [x],
                                    phase=TEST)
    layer.forward(bottom, top)
    n, c, oh, ow = top[0].shape
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            want = (win ** 2).sum(axis=(2, 3)) / win.sum(axis=(2, 3))
            np.testing.assert_allclose(top[0].data[:, :, i, j], want, rtol=1e-12)


def test_stochastic_test_phase_gradient():
    """TEST's backward is the gradient of sum(x^2) / sum(x) (it read an unwritten index)."""
    x = np.abs(spaced((2, 2, 6, 5), 8)) + 0.1
    layer, bottom, top = make_layer(text("STOCHASTIC", "kernel_size: 3 stride: 2"), [x],
                                    phase=TEST)
    check_gradient(layer, bottom, top)


def test_stochastic_train_samples_by_value():
    # one 2x2 window per plane with values 1..4: picks follow p = v / 10
    planes = 4000
    x = np.tile(np.array([[1.0, 2.0], [3.0, 4.0]]), (planes, 1, 1, 1))
    layer, bottom, top = make_layer(text("STOCHASTIC", "kernel_size: 2 stride: 2"), [x])
    set_random_seed(11)
    layer.forward(bottom, top)
    freq = np.array([(top[0].data == v).mean() for v in (1, 2, 3, 4)])
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    # the gradient goes to the picked element only
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff.sum(axis=(2, 3)), 1)
    np.testing.assert_array_equal((bottom[0].diff * x).sum(axis=(2, 3)), top[0].data[:, :, 0, 0])


def test_stochastic_gradient():
    x = np.abs(spaced((1, 2, 5, 5), 9)) + 0.1
    layer, bottom, top = make_layer(text("STOCHASTIC", "kernel_size: 3 stride: 2"), [x])
    check_gradient(layer, bottom, top, before_forward=lambda: set_random_seed(5))


@pytest.mark.parametrize("extra,message", [
    ("kernel_size: 3 kernel_h: 2 kernel_w: 2", "not both"),
    ("kernel_h: 2", "both kernel_h and kernel_w"),
    ("global_pooling: true kernel_size: 2", "Global_pooling"),
    ("global_pooling: true stride: 2", "only pad = 0 and stride = 1"),
    ("kernel_size: 2 pad: 2", "pad"),
    ("kernel_size: 3 pad: 1 pool: STOCHASTIC", "Padding implemented only"),
])
def test_errors(extra, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(f'name: "p" type: "Pooling" top: "y" pooling_param {{ {extra} }}',
                   [np.zeros((1, 1, 6, 6))])


def test_needs_four_axes():
    with pytest.raises(CaffeError, match="4 axes"):
        make_layer(text("MAX", "kernel_size: 2"), [np.zeros((2, 6, 6))])


def ties_and_nans(shape, window, seed):
    """Planes of small integers (many ties) with NaN, +-inf and, in the first window, NaN
    only."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.random(flat.size) < 0.15] = np.nan
    flat[:4] = [np.nan, np.nan, -np.inf, np.inf]
    x[0, 0, :window, :window] = np.nan
    return x.reshape(-1, shape[2], shape[3])


def assert_same_max_picks(flat_kernel, planes, window, stride, out_hw, rows):
    """flat_kernel over `rows` stacked output rows picks as _max_forward does: first maximum
    in row-major order, NaN never taken, -1 where a window holds only NaN."""
    from caffe_lite.kernels import pooling as P
    out_shape = (planes.shape[0],) + out_hw
    general = (np.empty(out_shape, np.float32), np.empty(out_shape, np.int64))
    flat = (np.empty(out_shape, np.float32), np.empty(out_shape, np.int64))
    P._max_forward(planes, window, window, stride, stride, 0, 0, *general, 0, planes.shape[0])
    flat_kernel(planes, *flat, 0, rows)
    np.testing.assert_array_equal(flat[0], general[0])
    np.testing.assert_array_equal(flat[1], general[1])
    assert flat[1][0, 0, 0] == -1


@pytest.mark.parametrize("shape", [(3, 2, 4, 6), (1, 1, 2, 2), (2, 3, 8, 8)])
def test_tiling_2x2_kernel_gives_the_general_kernels_bits(shape):
    from caffe_lite.kernels import pooling as P
    planes = ties_and_nans(shape, 2, 11)
    assert P._tiles_2x2(shape[2:], 2, 2, 2, 2, 0, 0)
    out_hw = (shape[2] // 2, shape[3] // 2)
    assert_same_max_picks(P._max_2x2_tiles, planes, 2, 2, out_hw, planes.shape[0] * out_hw[0])


@pytest.mark.parametrize("hw, geometry, tiles", [
    ((4, 6), (2, 2, 2, 2, 0, 0), True), ((5, 6), (2, 2, 2, 2, 0, 0), False),
    ((4, 6), (2, 2, 2, 2, 1, 0), False), ((4, 6), (3, 3, 2, 2, 0, 0), False),
    ((4, 6), (2, 2, 1, 1, 0, 0), False)])
def test_only_exact_2x2_tilings_take_the_flat_kernel(hw, geometry, tiles):
    from caffe_lite.kernels import pooling as P
    assert P._tiles_2x2(hw, *geometry) == tiles


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 2, 7, 9), (1, 1, 3, 3), (2, 1, 4, 5),
                                   (1, 2, 13, 13), (1, 1, 27, 27)])
def test_3x3_stride_2_kernel_gives_the_general_kernels_bits(shape):
    """Inside windows vectorized, overhanging ones (ceil rounding) clipped."""
    from caffe_lite.kernels import pooling as P
    planes = ties_and_nans(shape, 3, 12)
    out_hw = (P.pooled_size(shape[2], 3, 0, 2), P.pooled_size(shape[3], 3, 0, 2))
    assert_same_max_picks(P._max_3x3s2_rows, planes, 3, 2, out_hw, planes.shape[0] * out_hw[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threaded", [False, True])
def test_max_1x1_is_the_window_scan(dtype, threaded, monkeypatch):
    """A 1x1 window at stride 1 (JacintoNet11's pool1 and pool3) runs one flat pass; it
    gives the general window scan's bits: -FLT_MAX and mask -1 for NaN, -inf and -FLT_MAX;
    the backward from its mask is 0 + dy there (-0 becomes +0)."""
    if threaded:
        monkeypatch.setattr(neuron, "PARALLEL_MIN", 16)
        monkeypatch.setattr(threads, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    x.reshape(-1)[:5] = [np.nan, -np.inf, -FLT_MAX, -0.0, np.inf]
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy.reshape(-1)[5] = -0.0
    planes = x.reshape(-1, 4, 5)
    top, mask = np.empty_like(planes), np.empty(planes.shape, np.int64)
    P._max_forward(planes, 1, 1, 1, 1, 0, 0, top, mask, 0, planes.shape[0])
    dx = np.empty_like(planes)
    P._mask_backward(dy.reshape(planes.shape), mask, dx, 0, planes.shape[0])
    calls = []
    for name in ("_max_1x1",):
        kernel = getattr(P, name)
        monkeypatch.setattr(P, name, lambda *a, k=kernel, n=name: calls.append(n) or k(*a))
    y1, m1 = np.empty_like(x), np.empty(x.shape, np.int64)
    P.pool_forward(x, P.MAX, 1, 1, 1, 1, 0, 0, y1, m1)
    np.testing.assert_array_equal(y1.reshape(planes.shape), top)
    np.testing.assert_array_equal(m1.reshape(planes.shape), mask)
    dx1 = np.full_like(x, np.nan)
    P.pool_backward(dy, P.MAX, 1, 1, 1, 1, 0, 0, m1, dx1)
    np.testing.assert_array_equal(dx1.reshape(planes.shape).view(np.uint8), dx.view(np.uint8))
    assert calls and set(calls) == {"_max_1x1"}     # one call per thread
    # a mask written into the second top by hand still routes each diff where it says
    m1.reshape(-1)[7] = 0
    dx2 = np.full_like(x, np.nan)
    P.pool_backward(dy, P.MAX, 1, 1, 1, 1, 0, 0, m1, dx2)
    want = np.empty_like(planes)
    P._mask_backward(dy.reshape(planes.shape), m1.reshape(planes.shape), want, 0,
                     planes.shape[0])
    np.testing.assert_array_equal(dx2.reshape(planes.shape), want)


@pytest.mark.parametrize("shape,window", [
    ((2, 3, 32, 32), 3), ((1, 2, 7, 9), 3), ((1, 1, 3, 3), 3), ((1, 2, 13, 13), 3),
    ((3, 2, 4, 6), 2), ((1, 1, 2, 2), 2), ((2, 3, 8, 8), 2), ((2, 2, 7, 5), 2)])
def test_max_without_a_mask_gives_the_same_bits(shape, window):
    """A forward that no backward follows asks for no mask: the value-only kernels (3x3 at
    stride 2, tiling 2x2) pick as the masked ones, NaN, infinities, ties and signed zeros
    included; other windows (7x5 at 2x2: ceil rounding) fall back to a mask of their own."""
    planes = ties_and_nans(shape, window, 13)
    flat = planes.reshape(-1)
    flat[np.random.default_rng(5).random(flat.size) < 0.1] = -0.0
    x = planes.reshape(shape)
    out = shape[:2] + tuple(pooled_size(s, window, 0, 2) for s in shape[2:])
    masked, values = np.empty(out, np.float32), np.full(out, 7.0, np.float32)
    P.pool_forward(x, P.MAX, window, window, 2, 2, 0, 0, masked, np.empty(out, np.int64))
    P.pool_forward(x, P.MAX, window, window, 2, 2, 0, 0, values, None)
    assert np.array_equal(values.view(np.uint32), masked.view(np.uint32))


@pytest.mark.parametrize("backward_follows,ntop,masked", [
    (True, 1, True), (False, 1, False), (False, 2, True)])
def test_layer_asks_for_a_mask_only_where_something_reads_it(monkeypatch, backward_follows,
                                                             ntop, masked):
    x = spaced((2, 2, 9, 9), 3).astype(np.float32)
    layer, bottom, top = make_layer(text("MAX", "kernel_size: 3 stride: 2"), [x],
                                    dtype=np.float32, ntop=ntop)
    layer.backward_follows = backward_follows
    masks = []
    real = P.pool_forward

    def spy(*args):
        masks.append(args[-1])
        return real(*args)

    monkeypatch.setattr(P, "pool_forward", spy)
    layer.forward(bottom, top)
    assert (masks[0] is not None) == masked
    expected, _ = oracle_pool(x.astype(np.float64), 3, 3, 2, 2, 0, 0, "MAX")
    np.testing.assert_array_equal(top[0].data, expected.astype(np.float32))
