"""InnerProduct: a float64 oracle over axis x transpose x bias_term, gradient checks, the
accumulation contract, and Caffe's golden blobs."""
import itertools
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.blob import Blob
from caffe_lite.common import TRAIN
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from gradcheck import (assert_f32_sum_close, check_gradient, check_gradient_exhaustive,
                       f32_magnitudes, make_layer)

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def ip_text(num_output, axis=1, transpose=False, bias=True):
    return (f'name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param {{ '
            f"num_output: {num_output} axis: {axis} transpose: {str(transpose).lower()} "
            f"bias_term: {str(bias).lower()} }}")


def build(text, x, dtype=np.float64, seed=1):
    layer, bottom, top = make_layer(text, [x], dtype=dtype)
    rng = np.random.default_rng(seed)
    for blob in layer.blobs:
        blob.data[...] = rng.standard_normal(blob.shape)
    layer.forward(bottom, top)
    return layer, bottom, top


def oracle(x, w, b, axis, transpose):
    lead = x.shape[:axis]
    x2 = x.reshape(int(np.prod(lead)), -1)
    y = x2 @ (w if transpose else w.T)
    if b is not None:
        y = y + b
    return y.reshape(lead + (y.shape[1],))


@pytest.mark.parametrize("axis,transpose,bias",
                         list(itertools.product([0, 1, 2, -1], [False, True], [True, False])))
def test_forward_and_gradient(axis, transpose, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2, 5))
    layer, bottom, top = build(ip_text(6, axis, transpose, bias), x)
    canonical = axis % 4
    k = int(np.prod(x.shape[canonical:]))
    assert layer.blobs[0].shape == ((k, 6) if transpose else (6, k))
    assert top[0].shape == x.shape[:canonical] + (6,)
    expected = oracle(x, layer.blobs[0].data, layer.blobs[1].data if bias else None,
                      canonical, transpose)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("transpose", [False, True])
def test_exhaustive_tiny(transpose):
    x = np.random.default_rng(1).standard_normal((2, 3))
    layer, bottom, top = build(ip_text(2, transpose=transpose), x)
    check_gradient_exhaustive(layer, bottom, top)


def test_float32_matches_float64():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 50, 3, 3))
    l64, b64, t64 = build(ip_text(40), x, np.float64)
    l32, b32, t32 = build(ip_text(40), x, np.float32)
    dy = rng.standard_normal(t64[0].shape)
    for layer, bottom, top in ((l64, b64, t64), (l32, b32, t32)):
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
    y_mag, dx_mag, (dw_mag, db_mag) = f32_magnitudes(ip_text(40), x, dy, build)
    assert_f32_sum_close(t32[0].data, t64[0].data, y_mag, 50 * 9 + 1)   # K inputs + bias
    assert_f32_sum_close(b32[0].diff, b64[0].diff, dx_mag, 40)          # N outputs
    assert_f32_sum_close(l32.blobs[0].diff, l64.blobs[0].diff, dw_mag, 16)   # the batch
    assert_f32_sum_close(l32.blobs[1].diff, l64.blobs[1].diff, db_mag, 16)


@pytest.mark.parametrize("transpose", [False, True])
def test_backward_accumulates_params_and_overwrites_bottom(transpose):
    rng = np.random.default_rng(3)
    layer, bottom, top = build(ip_text(4, transpose=transpose), rng.standard_normal((5, 7)))
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    bottom[0].diff[...] = 99.0
    layer.backward(top, [True], bottom)
    dx, dw, db = bottom[0].diff.copy(), layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dx)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * dw)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * db)


def test_reshape_keeps_k_and_rejects_a_new_one():
    rng = np.random.default_rng(4)
    layer, bottom, top = build(ip_text(3), rng.standard_normal((2, 4, 3)))
    bottom[0].reshape((5, 2, 6))       # batch changes, K = 12 stays
    bottom[0].data[...] = rng.standard_normal(bottom[0].shape)
    layer.forward(bottom, top)
    assert top[0].shape == (5, 3)
    np.testing.assert_allclose(top[0].data, oracle(bottom[0].data, layer.blobs[0].data,
                                                   layer.blobs[1].data, 1, False))
    bottom[0].reshape((5, 13))
    with pytest.raises(CaffeError, match="Input size incompatible"):
        layer.forward(bottom, top)


def test_num_output_required():
    with pytest.raises(CaffeError, match="num_output"):
        make_layer('name: "ip" type: "InnerProduct" bottom: "x" top: "y"', [np.zeros((2, 3))])


# (case, layer, bottom blob, top blob, bottom-diff blob or None, ReLU in place on the top,
#  ReLU in place on the bottom)
GOLDEN_LAYERS = [
    ("layers_a", "fc1", "cat", "fc1", "cat_cat_0_split_1", False, False),
    ("layers_a", "fc2", "flat", "fc2", "flat", False, False),
    ("lenet", "ip1", "pool2", "ip1", "pool2", True, False),
    ("lenet", "ip2", "ip1", "ip2", "ip1", False, True),
]


@pytest.mark.parametrize("case,name,bottom_name,top_name,dx_name,relu_top,relu_bottom",
                         GOLDEN_LAYERS)
def test_golden_layer(case, name, bottom_name, top_name, dx_name, relu_top, relu_bottom):
    """Layer-level parity with BVLC Caffe: the golden bottom, parameters and top diff in,
    the golden top, parameter gradients and bottom diff out (float32)."""
    from caffe_lite.io.prototxt import read_net_param
    path = GOLDEN / case / "golden.npz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    z = np.load(path)
    lp = next(lp for lp in read_net_param(str(GOLDEN / case / "net_train.prototxt")).layer
              if lp.name == name)
    x = z[f"train/blob/{bottom_name}"]
    layer = create_layer(lp, TRAIN, np.float32)
    bottom, top = [Blob(x.shape, np.float32)], [Blob((), np.float32)]
    bottom[0].data[...] = x
    layer.setup(bottom, top)
    for i, blob in enumerate(layer.blobs):
        blob.data[...] = z[f"train/param/{name}/{i}"]
    layer.forward(bottom, top)
    y = np.maximum(top[0].data, 0) if relu_top else top[0].data
    np.testing.assert_allclose(y, z[f"train/blob/{top_name}"], rtol=1e-4, atol=1e-5)
    top[0].diff[...] = z[f"train/diff/{top_name}"]
    layer.backward(top, [True], bottom)
    for i, blob in enumerate(layer.blobs):
        np.testing.assert_allclose(blob.diff, z[f"train/pdiff/{name}/{i}"], rtol=1e-4,
                                   atol=1e-5)
    dx = bottom[0].diff * (x > 0) if relu_bottom else bottom[0].diff
    np.testing.assert_allclose(dx, z[f"train/diff/{dx_name}"].reshape(dx.shape), rtol=1e-4,
                               atol=1e-5)
