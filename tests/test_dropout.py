"""Dropout: TRAIN masks from the global RNG with 1/(1-p) scaling, identity in TEST."""
import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, layer_param, make_layer
from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN, set_random_seed
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer


def text(ratio=None):
    extra = f"dropout_param {{ dropout_ratio: {ratio} }}" if ratio is not None else ""
    return f'name: "d" type: "Dropout" top: "y" {extra}'


@pytest.mark.parametrize("ratio", [None, 0.2, 0.7, 0.0])
def test_train_mask_and_scale(ratio):
    p = 0.5 if ratio is None else float(np.float32(ratio))
    x = np.random.default_rng(1).random((50, 40)) + 0.5
    layer, bottom, top = make_layer(text(ratio), [x])
    set_random_seed(3)
    layer.forward(bottom, top)
    y = top[0].data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-12)
    assert abs(kept.mean() - (1 - p)) < 0.03
    # backward uses the same mask and scale
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, kept / (1 - p), rtol=1e-12)


def test_seed_reproducible():
    x = np.random.default_rng(2).standard_normal((8, 9))
    layer, bottom, top = make_layer(text(0.5), [x])
    set_random_seed(7)
    layer.forward(bottom, top)
    first = top[0].data.copy()
    set_random_seed(7)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, first)
    layer.forward(bottom, top)
    assert not np.array_equal(top[0].data, first)


def test_test_phase_identity():
    x = np.random.default_rng(3).standard_normal((4, 5, 2))
    layer, bottom, top = make_layer(text(0.3), [x], phase=TEST)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, x)
    top[0].diff[...] = x * 2
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, x * 2)


def test_gradient():
    x = np.random.default_rng(4).standard_normal((3, 4, 5))
    layer, bottom, top = make_layer(text(0.4), [x])
    check_gradient(layer, bottom, top, before_forward=lambda: set_random_seed(9))
    layer, bottom, top = make_layer(text(0.4), [x[:1, :2, :3]])
    check_gradient_exhaustive(layer, bottom, top, before_forward=lambda: set_random_seed(9))


def test_in_place():
    x = np.random.default_rng(5).standard_normal((6, 7))
    layer, bottom, top = make_layer(text(0.5), [x])
    set_random_seed(1)
    layer.forward(bottom, top)
    inplace = create_layer(layer_param(text(0.5)), TRAIN, np.float64)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    inplace.setup([blob], [blob])
    set_random_seed(1)
    inplace.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, top[0].data)
    blob.diff[...] = 1
    inplace.backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, inplace.mask * inplace.train_scale)


def test_bad_ratio():
    with pytest.raises(CaffeError, match="dropout_ratio"):
        make_layer(text(1.0), [np.zeros(3)])


@pytest.mark.parametrize("in_place", [False, True])
def test_train_pass_is_the_step_by_step_formula_bit_for_bit(in_place):
    """mask = (u < 1 - p) from the generator's next draws, y = (x * mask) * scale,
    dx = (dy * mask) * scale in float32, negative values, -0.0 and NaN included."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3, 7)).astype(np.float32)
    x.reshape(-1)[:3] = [np.nan, -0.0, -2.5]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = create_layer(layer_param(text(0.3)), TRAIN, np.float32)
    bottom = Blob(x.shape, np.float32)
    top = bottom if in_place else Blob((), np.float32)
    layer.setup([bottom], [top])
    bottom.data[...] = x
    set_random_seed(11)
    layer.forward([bottom], [top])
    y = top.data.copy()
    top.diff[...] = dy
    layer.backward([top], [True], [bottom])
    set_random_seed(11)
    from caffe_lite.common import rng as caffe_rng
    mask = (caffe_rng().random(x.shape) < 1.0 - float(np.float32(0.3))).astype(np.float32)
    scale = layer.train_scale
    np.testing.assert_array_equal(y, (x * mask) * scale)
    np.testing.assert_array_equal(bottom.diff, (dy * mask) * scale)
