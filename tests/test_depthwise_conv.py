"""kernels/depthwise_conv.py: the direct depthwise loops that Convolution runs when every group
has one input channel, against the float64 oracle, the lowered path and numerical gradients."""
import itertools

import numpy as np
import pytest

from caffe_lite import threads
from caffe_lite.kernels import conv as conv_kernels
from caffe_lite.kernels import conv_engines, depthwise_conv
from caffe_lite.kernels.channel_epilogue import ChannelEpilogue
from caffe_lite.kernels.conv import ConvGeometry
from gradcheck import assert_f32_sum_close, check_gradient, f32_magnitudes
from test_conv import build, conv_oracle, conv_text, out_size

# channels C = 3; multiplier, kernel, stride, pad, dilation, bias
GRID = list(itertools.product([1, 2], [(3, 3), (3, 2)], [(1, 1), (2, 1)], [(0, 0), (1, 2)],
                              [1, 2], [True, False]))


@pytest.mark.parametrize("mult,kernel,stride,pad,dilation,bias", GRID)
def test_forward_and_gradient(mult, kernel, stride, pad, dilation, bias):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    layer, bottom, top = build(conv_text("Convolution", 3 * mult, kernel, stride, pad, dilation,
                                         group=3, bias=bias), x)
    b = layer.blobs[1].data if bias else None
    expected = conv_oracle(x, layer.blobs[0].data, b, stride, pad, (dilation,) * 2, 3)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


def test_convolution_layers_take_the_depthwise_path(monkeypatch):
    def lowered(*args, **kwargs):
        raise AssertionError("the lowered path ran")
    monkeypatch.setattr(conv_engines, "conv2d_forward", lowered)
    monkeypatch.setattr(conv_engines, "conv2d_backward", lowered)
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5))
    layer, bottom, top = build(conv_text("Convolution", 4, (3, 3), pad=(1, 1), group=4), x)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    with pytest.raises(AssertionError, match="lowered path"):     # group 2: two channels each
        build(conv_text("Convolution", 4, (3, 3), pad=(1, 1), group=2), x)


def geometry(kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilation=(1, 1), group=8):
    return ConvGeometry(*kernel, *pad, *stride, *dilation, group)


def lowered_and_direct(x, w, b, dy, geo):
    """(forward, dx, dw, db) by the lowered path and by the depthwise loops."""
    results = []
    for forward, backward in ((conv_kernels.conv2d_forward, conv_kernels.conv2d_backward),
                              (depthwise_conv.depthwise_forward,
                               depthwise_conv.depthwise_backward)):
        y = np.empty(dy.shape, x.dtype)
        forward(x, w, b, geo, y)
        dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
        backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
        results.append((y, dx, dw, db))
    return results


@pytest.mark.parametrize("stride,mult", [((1, 1), 1), ((2, 2), 1), ((1, 1), 3)])
def test_float32_equals_the_lowered_path_to_rounding(stride, mult):
    rng = np.random.default_rng(2)
    n, c, h = 4, 8, 13
    geo = geometry(stride=stride, group=c)
    out = out_size(h, 3, stride[0], 1, 1)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c * mult, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32)
    dy = rng.standard_normal((n, c * mult, out, out)).astype(np.float32)
    (y0, dx0, dw0, db0), (y1, dx1, dw1, db1) = lowered_and_direct(x, w, b, dy, geo)
    # both are float32 sums of the same terms: compare each with the float64 sums of their
    # absolute values as the scale (kh*kw terms forward, m*kh*kw for dx, n*out*out for dw)
    text = conv_text("Convolution", c * mult, (3, 3), stride, (1, 1), group=c)
    mag_y, mag_dx, (mag_dw, mag_db) = f32_magnitudes(text, x, dy, _build_with(w, b))
    for got, want, mag, terms in ((y1, y0, mag_y, 10), (dx1, dx0, mag_dx, 9 * mult),
                                  (dw1, dw0, mag_dw, n * out * out),
                                  (db1, db0, mag_db, n * out * out)):
        assert_f32_sum_close(got, want, 2 * mag, terms)


def _build_with(w, b):
    """f32_magnitudes' build: the layer with these weights, in the dtype asked for."""
    from gradcheck import make_layer

    def make(text, x, dtype):
        layer, bottom, top = make_layer(text, [x], dtype=dtype)
        layer.blobs[0].data[...] = w
        layer.blobs[1].data[...] = b
        return layer, bottom, top
    return make


def test_thread_count_does_not_change_a_bit():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    dy = rng.standard_normal((3, 6, 9, 9)).astype(np.float32)
    geo = geometry(group=6)
    runs = []
    saved = threads.get_num_threads()
    try:
        for count in (1, 2, 3):
            threads.set_num_threads(count)
            runs.append(lowered_and_direct(x, w, b, dy, geo)[1])
    finally:
        threads.set_num_threads(saved)
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def _plane_cases():
    """Plane sides, multiplier, kernel, stride, pad and dilation of the phase tests: those
    with at least one output."""
    for (h, wd), mult, (kh, kw), stride, pad, dil in itertools.product(
            [(7, 6), (30, 31), (1, 3)], [1, 2], [(3, 3), (3, 2), (5, 5)],
            [(2, 2), (2, 1), (1, 3), (3, 3), (1, 1)], [(0, 0), (1, 2)], [(1, 1), (2, 1)]):
        out_h = out_size(h, kh, stride[0], pad[0], dil[0])
        out_w = out_size(wd, kw, stride[1], pad[1], dil[1])
        if out_h >= 1 and out_w >= 1:
            geometry = (3, 3 * mult, h, wd, out_h, out_w, kh, kw, *pad, *stride, *dil)
            yield (h, wd), mult, (kh, kw), (out_h, out_w), geometry


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phases_give_the_bits_of_the_row_loops(dtype):
    """The forward on the padded plane's phases, tap by tap or nine taps at once, sums the
    same products in the same order as the row-by-row loops (padding adds w * 0 to a sum
    that is never -0)."""
    rng = np.random.default_rng(4)
    tried = 0
    for (h, wd), mult, (kh, kw), out_hw, geometry in _plane_cases():
        for bias in (True, False):
            x = rng.standard_normal((2, 3, h, wd)).astype(dtype)
            w2 = rng.standard_normal((3 * mult, kh * kw)).astype(dtype)
            b = rng.standard_normal(3 * mult).astype(dtype) if bias else np.empty(0, dtype)
            runs = []
            kernels = [depthwise_conv._forward_planes, depthwise_conv._forward_phases]
            if (kh, kw) == (3, 3):
                kernels.append(depthwise_conv._forward_nine)
            for kernel in kernels:
                y = np.full((2, 3 * mult) + out_hw, np.nan, dtype)
                kernel(x.reshape(-1), w2, b, ChannelEpilogue.none(dtype), y.reshape(-1),
                       *geometry, 0, 2 * 3 * mult)
                runs.append(y)
            for run in runs[1:]:
                np.testing.assert_array_equal(run, runs[0])
            tried += 1
    assert tried > 100


def test_nine_taps_in_one_pass_only_where_they_pay():
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 16)
    assert depthwise_conv._nine_pay(geo, 112, 112)
    assert depthwise_conv._nine_pay(geo._replace(stride_h=2, stride_w=2), 112, 56)
    assert not depthwise_conv._nine_pay(geo, 7, 7)                  # 7 x 9: tap by tap
    assert not depthwise_conv._nine_pay(geo._replace(kernel_w=2), 112, 112)
    assert not depthwise_conv._nine_pay(geo._replace(stride_h=4, stride_w=4), 112, 28)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phase_gradients_equal_the_row_loops(dtype):
    """The data gradient on the phases adds the same products in the same order as the
    row loops (the same bits); the weight and bias sums are float64 sums of the same
    float32 products, in lanes of another order (within float64 rounding)."""
    rng = np.random.default_rng(6)
    tried = 0
    for (h, wd), mult, (kh, kw), out_hw, geometry in _plane_cases():
        x = rng.standard_normal((2, 3, h, wd)).astype(dtype)
        w2 = rng.standard_normal((3 * mult, kh * kw)).astype(dtype)
        dy = rng.standard_normal((2, 3 * mult) + out_hw).astype(dtype)
        data, sums = [], []
        for kernel in (depthwise_conv._data_planes, depthwise_conv._data_phases):
            dx = np.full(x.shape, np.nan, dtype)
            kernel(dy.reshape(-1), w2, dx.reshape(-1), *geometry, 0, 6)
            data.append(dx)
        kernels = [depthwise_conv._weight_sums, depthwise_conv._weight_sums_phases]
        if (kh, kw) == (3, 3):
            kernels.append(depthwise_conv._weight_sums_nine)
        for kernel in kernels:
            total = np.zeros((3 * mult, kh * kw + 1))
            kernel(x.reshape(-1), dy.reshape(-1), total, True, True, *geometry, 0, 3 * mult)
            sums.append(total)
        np.testing.assert_array_equal(data[1], data[0])
        for total in sums[1:]:
            np.testing.assert_allclose(total, sums[0], rtol=1e-13, atol=1e-13)
        tried += 1
    assert tried > 60


def test_a_strided_plane_takes_the_phases_and_matches_the_oracle(monkeypatch):
    calls = []
    phases = depthwise_conv._forward_phases
    monkeypatch.setattr(depthwise_conv, "_forward_phases",
                        lambda *args: calls.append(1) or phases(*args))
    x = np.random.default_rng(5).standard_normal((2, 3, 13, 10))
    layer, bottom, top = build(conv_text("Convolution", 6, (3, 3), (2, 2), (1, 1), group=3), x)
    expected = conv_oracle(x, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1),
                           (1, 1), 3)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    assert calls


def test_stride_one_data_gradient_is_the_rotated_kernels_forward(monkeypatch):
    """At stride 1 with one output per channel, dx is the forward of dy with the rotated
    kernel (its taps summed in the other order: float32 rounding of 9 terms); with a
    channel multiplier or a stride, the scatter into the phases."""
    calls = []
    forward = depthwise_conv.depthwise_forward
    monkeypatch.setattr(depthwise_conv, "depthwise_forward",
                        lambda *args: calls.append(args[3]) or forward(*args))
    rng = np.random.default_rng(8)
    for mult, stride, flipped in ((1, 1, True), (2, 1, False), (1, 2, False)):
        calls.clear()
        x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
        w = rng.standard_normal((4 * mult, 1, 3, 3)).astype(np.float32)
        geo = ConvGeometry(3, 3, 1, 1, stride, stride, 1, 1, 4)
        dy = rng.standard_normal((2, 4 * mult) + geo.output_shape(9, 8)).astype(np.float32)
        dx = np.full_like(x, np.nan)
        depthwise_conv.depthwise_backward(x, w, dy, geo, dx=dx)
        assert bool(calls) == flipped
        if flipped:
            assert calls[0] == geo._replace(pad_h=1, pad_w=1)
        # the lowered path in float64 as the oracle, and over magnitudes as the bound's scale
        ref, scale = np.empty(x.shape), np.empty(x.shape)
        for out, arrays in ((ref, (x, w, dy)), (scale, (np.abs(x), np.abs(w), np.abs(dy)))):
            conv_kernels.conv2d_backward(*(a.astype(np.float64) for a in arrays), geo, dx=out)
        eps = np.finfo(np.float32).eps
        assert np.all(np.abs(dx - ref) <= (9 * mult + 2) * eps * scale)
