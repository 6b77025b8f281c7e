"""In-place kernels (one array read and written, so the loop vectorizes) give the same bits
as the general kernels, through the layers, threaded or not."""
import numpy as np
import pytest

from caffe_lite import threads
from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN
from caffe_lite.kernels import batch_norm as BN
from caffe_lite.kernels import neuron as K
from caffe_lite.kernels.channel import bias_forward
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2
from google.protobuf import text_format


def values(shape, seed):
    """Normal values with the cases a gate must keep: +-0, NaN, +-inf."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:5] = [0.0, -0.0, np.nan, np.inf, -np.inf]
    return x


def test_same_buffer_is_one_buffer_only():
    a = np.zeros(10, np.float32)
    assert K.same_buffer(a, a.reshape(2, 5).reshape(-1))
    assert not K.same_buffer(a, a.copy())
    assert not K.same_buffer(a[1:], a[:-1])
    assert not K.same_buffer(a[:5], a)


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.2])
def test_relu_in_place_kernels_match_the_general_ones(slope):
    x, g = values(1000, 1), values(1000, 2)
    s = np.float32(slope)
    out = np.empty_like(x)
    K.relu_forward(x, s, out)
    y = x.copy()
    K.relu_forward_in_place(y, s)
    np.testing.assert_array_equal(y, out)
    K.relu_backward(x, g, s, out)
    d = g.copy()
    K.relu_backward_in_place(x, d, s)
    np.testing.assert_array_equal(d, out)


def make(text, shape, phase, dtype=np.float32):
    param = caffe_pb2.LayerParameter()
    text_format.Parse(text, param)
    layer = create_layer(param, phase, dtype)
    bottom = Blob(shape, dtype)
    top = bottom if param.top[0] == param.bottom[0] else Blob((), dtype)
    layer.setup([bottom], [top])
    return layer, bottom, top


def run(text, x, dy, phase, prepare=lambda layer: None):
    layer, bottom, top = make(text, x.shape, phase)
    prepare(layer)
    bottom.data[...] = x
    layer.forward([bottom], [top])
    y = top.data.copy()
    top.diff[...] = dy
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward([top], [True], [bottom])
    return [y, bottom.diff.copy()] + [blob.diff.copy() for blob in layer.blobs]


def stored_statistics(layer):
    c = layer.blobs[0].shape[0]
    layer.blobs[0].data[...] = np.linspace(-1, 1, c)
    layer.blobs[1].data[...] = np.linspace(0.5, 2, c)
    layer.blobs[2].data[...] = 2.0
    for blob, low in zip(layer.blobs[3:], (0.5, -0.3)):     # NVCaffe's scale and bias
        blob.data[...] = np.linspace(low, 1.5, c)


LAYERS = {
    "ReLU": ('name: "r" type: "ReLU" bottom: "x" top: "{top}" relu_param {{ negative_slope: '
             '0.05 }}', TRAIN, lambda layer: None),
    "Scale": ('name: "s" type: "Scale" bottom: "x" top: "{top}" scale_param {{ bias_term: true '
              '}}', TRAIN, lambda layer: [blob.data.__setitem__(..., np.linspace(-2, 2, 3))
                                         for blob in layer.blobs]),
    "Bias": ('name: "b" type: "Bias" bottom: "x" top: "{top}"', TRAIN,
             lambda layer: layer.blobs[0].data.__setitem__(..., np.linspace(-2, 2, 3))),
    "BatchNorm": ('name: "bn" type: "BatchNorm" bottom: "x" top: "{top}"', TEST,
                  stored_statistics),
    "BatchNorm global in TRAIN": ('name: "bn" type: "BatchNorm" bottom: "x" top: "{top}" '
                                  'batch_norm_param {{ use_global_stats: true }}', TRAIN,
                                  stored_statistics),
    "BatchNorm batch statistics": ('name: "bn" type: "BatchNorm" bottom: "x" top: "{top}"',
                                   TRAIN, lambda layer: None),
    "BatchNorm NVCaffe scale_bias": ('name: "bn" type: "BatchNorm" bottom: "x" top: "{top}" '
                                     'batch_norm_param {{ scale_bias: true }}', TEST,
                                     stored_statistics),
    "BatchNorm NVCaffe batch statistics": ('name: "bn" type: "BatchNorm" bottom: "x" '
                                           'top: "{top}" batch_norm_param {{ scale_bias: true '
                                           '}}', TRAIN, stored_statistics),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (6, 3)])     # (6, 3): one value per channel
def test_in_place_layer_gives_the_bits_of_the_out_of_place_one(name, threaded, shape,
                                                               monkeypatch):
    if threaded:
        monkeypatch.setattr(K, "STREAMING_MIN", 16)
        monkeypatch.setattr(K, "PARALLEL_MIN", 16)
        monkeypatch.setattr(threads, "get_num_threads", lambda: 3)
    text, phase, prepare = LAYERS[name]
    x, dy = values(shape, 3), values(shape, 4)
    if name.startswith("BatchNorm"):     # BatchNorm's formula has no gate to test on NaN
        x, dy = np.nan_to_num(x, posinf=3, neginf=-3), np.nan_to_num(dy, posinf=3, neginf=-3)
    apart = run(text.format(top="y"), x, dy, phase, prepare)
    in_place = run(text.format(top="x"), x, dy, phase, prepare)
    for a, b in zip(apart, in_place):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threaded", [False, True])
def test_bias_forward_is_numpys_broadcast_add(threaded, monkeypatch):
    if threaded:
        monkeypatch.setattr(K, "PARALLEL_MIN", 16)
        monkeypatch.setattr(threads, "get_num_threads", lambda: 3)
    x, b = values((2, 5, 7), 5), values(5, 6)
    want = x + b[None, :, None]
    got = np.empty_like(x)
    bias_forward(x, b, got)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    bias_forward(x, b, x)
    np.testing.assert_array_equal(x.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (1, 3, 4, 6), (5, 4, 1)])
def test_normalisation_split_by_images_or_channels_keeps_the_bits(keep, in_place, shape,
                                                                   monkeypatch):
    """batch_norm.split_images: whole images per thread when there are enough images,
    channel ranges otherwise; every split gives one thread's bits."""
    x = np.nan_to_num(values(shape, 7), posinf=3, neginf=-3).reshape(shape[0], shape[1], -1)
    c = shape[1]
    mean, inv = np.linspace(-1, 1, c, dtype=np.float32), np.linspace(0.5, 2, c,
                                                                     dtype=np.float32)
    scale, bias = np.linspace(-2, 2, c, dtype=np.float32), np.linspace(1, -1, c,
                                                                       dtype=np.float32)
    runs = []
    for count, floor in ((1, 1 << 30), (2, 16), (3, 16)):
        monkeypatch.setattr(K, "STREAMING_MIN", floor)
        monkeypatch.setattr(threads, "get_num_threads", lambda count=count: count)
        src = x.copy()
        top = src if in_place else np.full_like(src, np.nan)
        x_norm = np.full_like(src, np.nan) if keep else None
        BN.nv_normalize(src, mean, inv, scale, bias, top, x_norm, 0.0)
        runs.append((top, x_norm))
    for top, x_norm in runs[1:]:
        np.testing.assert_array_equal(top, runs[0][0])
        if keep:
            np.testing.assert_array_equal(x_norm, runs[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 7, 100000])
def test_running_statistics_and_std_are_caffes_float_operations(dtype, m):
    """bvlc_running_and_std: BVLC's caffe_cpu_axpby updates and sqrt(var + eps), each value
    rounded as the NumPy sequence (and Caffe's float code) rounds it."""
    rng = np.random.default_rng(m)
    dt = np.dtype(dtype).type
    mean, var = rng.standard_normal(37).astype(dtype), np.abs(rng.standard_normal(37)).astype(
        dtype)
    var[0] = 0
    blobs = [rng.standard_normal(37).astype(dtype), np.abs(rng.standard_normal(37)).astype(
        dtype), np.array([3.7], dtype)]
    want = [b.copy() for b in blobs]
    maf = dt(0.999)
    want[2][0] = want[2][0] * maf + dt(1)
    want[0] = want[0] * maf + mean
    correction = dt(m) / dt(m - 1) if m > 1 else dt(1)
    want[1] = want[1] * maf + correction * var
    std = BN.bvlc_running_and_std(blobs, mean, var, 0.999, m, 1e-5)
    for got, expected in zip(blobs + [std], want + [np.sqrt(var + dt(1e-5))]):
        np.testing.assert_array_equal(got, expected)


def test_batch_norm_with_stored_statistics_is_caffes_formula():
    text, phase, prepare = LAYERS["BatchNorm"]
    x, dy = values((2, 3, 4, 4), 5), values((2, 3, 4, 4), 6)
    x, dy = np.nan_to_num(x, posinf=3, neginf=-3), np.nan_to_num(dy, posinf=3, neginf=-3)
    y, dx = run(text.format(top="x"), x, dy, phase, prepare)[:2]
    # Caffe: mean and variance divided by the stored factor (2), std = sqrt(var + eps)
    mean = np.linspace(-1, 1, 3).astype(np.float32) / np.float32(2)
    std = np.sqrt(np.linspace(0.5, 2, 3).astype(np.float32) / np.float32(2) + np.float32(1e-5))
    np.testing.assert_array_equal(y, (x - mean[:, None, None]) / std[:, None, None])
    np.testing.assert_array_equal(dx, dy / std[:, None, None])


def test_batch_norm_with_stored_statistics_keeps_no_x_norm():
    layer, bottom, top = make(LAYERS["BatchNorm"][0].format(top="x"), (2, 3, 4, 4), TEST)
    stored_statistics(layer)
    layer.forward([bottom], [top])
    assert getattr(layer, "_x_norm", None) is None


def test_bvlc_backward_with_stored_statistics_in_place():
    std = np.array([0.5, 2.0], np.float32)
    dy = values((3, 2, 6), 7)
    expected = np.empty_like(dy)
    BN.bvlc_backward(None, dy, std, True, expected)
    in_place = dy.copy()
    BN.bvlc_backward(None, in_place, std, True, in_place)
    np.testing.assert_array_equal(in_place, expected)


def test_one_value_per_channel_sums_and_scale_are_the_formulas():
    """BatchNorm's gradient sums and Scale along the channels (a (N, C) blob, as after an
    InnerProduct), against float64 NumPy."""
    from caffe_lite.kernels import channel as CH
    rng = np.random.default_rng(8)
    dy, xn, x = (rng.standard_normal((9, 4, 1)) for _ in range(3))
    scale, bias = rng.standard_normal(4), rng.standard_normal(4)
    sums = np.empty((4, 4))
    BN._grad_sums(dy, xn, scale, sums, 0, 4)
    g = dy[:, :, 0]
    np.testing.assert_allclose(sums[0], (g * xn[:, :, 0]).sum(0), rtol=1e-12)
    np.testing.assert_allclose(sums[1], g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(sums[2], (g * scale * xn[:, :, 0]).sum(0), rtol=1e-12)
    np.testing.assert_allclose(sums[3], (g * scale).sum(0), rtol=1e-12)
    y, keep = np.empty_like(x), np.empty_like(x)
    CH.scale_forward(x, scale, bias, y, keep)
    np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0] * scale + bias)
    np.testing.assert_array_equal(keep, x)
    ds, db, dx = np.empty(4), np.empty(4), np.empty_like(x)
    CH.scale_backward(dy, x, scale, ds, db, dx)
    np.testing.assert_allclose(ds, (g * x[:, :, 0]).sum(0), rtol=1e-12)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(dx[:, :, 0], g * scale)


def test_one_value_per_channel_statistics_normalisation_and_backward_are_the_formulas():
    """BatchNorm's kernels along the channels (a (N, C) blob) give the bits of the rows'
    formulas in float32, the sums over the images in image order."""
    rng = np.random.default_rng(9)
    x, dy = (rng.standard_normal((9, 4, 1)).astype(np.float32) for _ in range(2))
    x[0, 0, 0] = -0.0
    f32 = np.float32
    pre, post = f32(1 / 9), f32(1)
    mean, var = np.empty(4, np.float32), np.empty(4, np.float32)
    BN.bvlc_batch_stats(x, mean, var)
    want_mean, want_var = np.zeros(4, np.float32), np.zeros(4, np.float32)
    for o in range(9):
        want_mean += pre * x[o, :, 0]
    want_mean *= post
    for o in range(9):
        d = x[o, :, 0] - want_mean
        want_var += pre * (d * d)
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(var, want_var * post)
    std = BN.bvlc_std(var, 1e-5)
    y, x_norm = np.empty_like(x), np.empty_like(x)
    BN.bvlc_normalize(x, mean, std, y, x_norm, relu_slope=0.25)
    norm = (x[:, :, 0] - mean) / std
    np.testing.assert_array_equal(x_norm[:, :, 0], norm)
    np.testing.assert_array_equal(y[:, :, 0], np.maximum(norm, 0) + f32(0.25) * np.minimum(norm, 0))
    stored = np.empty_like(x)
    BN.bvlc_normalize_global(x, mean, std, stored)
    np.testing.assert_array_equal(stored, x_norm)
    dx = np.empty_like(x)
    BN.bvlc_backward(x_norm, dy, std, False, dx)
    k = f32(-1 / 9)
    a, b = (dy[:, :, 0] * x_norm[:, :, 0]), dy[:, :, 0]
    sum_a, sum_b = np.zeros(4, np.float32), np.zeros(4, np.float32)
    for o in range(9):
        sum_a += a[o]
        sum_b += b[o]
    np.testing.assert_array_equal(dx[:, :, 0],
                                  ((sum_a * x_norm[:, :, 0] + sum_b) * k + dy[:, :, 0]) / std)
    BN.bvlc_backward(None, dy, std, True, dx)
    np.testing.assert_array_equal(dx[:, :, 0], dy[:, :, 0] / std)
    scale = rng.standard_normal(4).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    inv_std = BN.nv_inv_std(var, 1e-5)
    BN.nv_normalize(x, mean, inv_std, scale, bias, y, x_norm)
    norm = (x[:, :, 0] - mean) * inv_std
    np.testing.assert_array_equal(x_norm[:, :, 0], norm)
    np.testing.assert_array_equal(y[:, :, 0], norm * scale + bias)
    BN.nv_backward(x_norm, dy, scale, inv_std, dx)
    g = dy[:, :, 0] * scale
    sum_gy, sum_g = np.zeros(4, np.float32), np.zeros(4, np.float32)
    for o in range(9):
        sum_gy += g[o] * x_norm[o, :, 0]
        sum_g += g[o]
    inv = f32(1 / 9)
    np.testing.assert_array_equal(
        dx[:, :, 0], (g - ((sum_gy * inv) * x_norm[:, :, 0] + sum_g * inv)) * inv_std)
