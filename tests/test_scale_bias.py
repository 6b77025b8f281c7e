"""Scale and Bias: Caffe's (outer, dim, inner) broadcasting, both bottom forms, gradients."""
import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, layer_param, make_layer
from caffe_lite.blob import Blob
from caffe_lite.common import TRAIN
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer


def operand_shape(shape, axis, num_axes):
    axis = axis % len(shape)
    return shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes]


def expand(v, shape, axis):
    if v.ndim == 0:
        return v
    axis = axis % len(shape)
    return v.reshape((1,) * axis + v.shape + (1,) * (len(shape) - axis - v.ndim))


ONE_BOTTOM = [  # shape, axis, num_axes
    ((2, 3, 4, 5), 1, 1),
    ((2, 3, 4, 5), 0, -1),
    ((2, 3, 4, 5), 1, 2),
    ((2, 3, 4, 5), -1, 1),
    ((2, 3, 4, 5), 2, 0),
    ((2, 3, 4, 5), 0, 1),
    ((6, 5), 1, 1),
    ((2, 3, 4, 5), 1, -1),
]


def scale_text(axis, num_axes, extra=""):
    return (f'name: "s" type: "Scale" top: "y" scale_param {{ axis: {axis} '
            f'num_axes: {num_axes} filler {{ type: "gaussian" }} {extra} }}')


def bias_text(axis, num_axes):
    return (f'name: "b" type: "Bias" top: "y" bias_param {{ axis: {axis} num_axes: {num_axes} '
            f'filler {{ type: "gaussian" }} }}')


@pytest.mark.parametrize("case", ONE_BOTTOM)
@pytest.mark.parametrize("bias_term", [False, True])
def test_scale_one_bottom(case, bias_term):
    shape, axis, num_axes = case
    x = np.random.default_rng(1).standard_normal(shape)
    extra = 'bias_term: true bias_filler { type: "gaussian" }' if bias_term else ""
    layer, bottom, top = make_layer(scale_text(axis, num_axes, extra), [x])
    want_shape = operand_shape(shape, axis, num_axes)
    assert [b.shape for b in layer.blobs] == [want_shape] * (2 if bias_term else 1)
    layer.forward(bottom, top)
    want = x * expand(layer.blobs[0].data, shape, axis)
    if bias_term:
        want = want + expand(layer.blobs[1].data, shape, axis)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-13)
    check_gradient(layer, bottom, top, directions=2)


@pytest.mark.parametrize("case", ONE_BOTTOM)
def test_bias_one_bottom(case):
    shape, axis, num_axes = case
    x = np.random.default_rng(2).standard_normal(shape)
    layer, bottom, top = make_layer(bias_text(axis, num_axes), [x])
    assert layer.blobs[0].shape == operand_shape(shape, axis, num_axes)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x + expand(layer.blobs[0].data, shape, axis))
    check_gradient(layer, bottom, top)


TWO_BOTTOM = [  # shape, axis, operand shape
    ((2, 3, 4, 5), 1, (3,)),
    ((2, 3, 4, 5), 1, (3, 4)),
    ((2, 3, 4, 5), 0, (2,)),
    ((2, 3, 4, 5), -2, (4, 5)),
    ((2, 3, 4, 5), 0, (2, 3, 4, 5)),
    ((2, 3, 4, 5), 1, ()),
]


@pytest.mark.parametrize("case", TWO_BOTTOM)
@pytest.mark.parametrize("layer_type", ["Scale", "Bias"])
def test_two_bottoms(case, layer_type):
    shape, axis, oshape = case
    rng = np.random.default_rng(3)
    x, s = rng.standard_normal(shape), rng.standard_normal(oshape)
    field = "scale_param" if layer_type == "Scale" else "bias_param"
    layer, bottom, top = make_layer(
        f'name: "l" type: "{layer_type}" top: "y" {field} {{ axis: {axis} }}', [x, s])
    assert layer.blobs == []
    layer.forward(bottom, top)
    operand = expand(s, shape, axis)
    np.testing.assert_allclose(top[0].data, x * operand if layer_type == "Scale" else x + operand,
                               rtol=1e-13)
    check_gradient(layer, bottom, top, directions=2)


def test_scale_two_bottoms_with_bias():
    rng = np.random.default_rng(4)
    x, s = rng.standard_normal((2, 3, 2)), rng.standard_normal((3,))
    layer, bottom, top = make_layer(
        'name: "s" type: "Scale" top: "y" scale_param { bias_term: true '
        'bias_filler { type: "constant" value: 0.5 } }', [x, s])
    assert [b.shape for b in layer.blobs] == [(3,)]
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x * s[None, :, None] + 0.5)
    check_gradient(layer, bottom, top)


def test_exhaustive_tiny():
    rng = np.random.default_rng(5)
    layer, bottom, top = make_layer(
        scale_text(1, 1, 'bias_term: true bias_filler { type: "gaussian" }'),
        [rng.standard_normal((2, 2, 3))])
    check_gradient_exhaustive(layer, bottom, top)
    layer, bottom, top = make_layer('name: "s" type: "Scale" top: "y"',
                                    [rng.standard_normal((2, 3, 2)), rng.standard_normal(3)])
    check_gradient_exhaustive(layer, bottom, top)


def test_default_fillers():
    x = np.ones((2, 3, 2))
    layer, _, _ = make_layer('name: "s" type: "Scale" top: "y" scale_param { bias_term: true }',
                             [x])
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    layer, _, _ = make_layer('name: "b" type: "Bias" top: "y"', [x])
    np.testing.assert_array_equal(layer.blobs[0].data, 0)


@pytest.mark.parametrize("text", [
    scale_text(1, 1, 'bias_term: true bias_filler { type: "gaussian" }'),
    bias_text(1, 2),
])
def test_in_place(text):
    rng = np.random.default_rng(6)
    x, dy = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    layer, bottom, top = make_layer(text, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    param = layer_param(text)
    inplace = create_layer(param, TRAIN, np.float64)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    inplace.setup([blob], [blob])
    for mine, ref in zip(inplace.blobs, layer.blobs):
        mine.data[...] = ref.data
    inplace.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-14)
    blob.diff[...] = dy
    inplace.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-14)
    for mine, ref in zip(inplace.blobs, layer.blobs):
        np.testing.assert_allclose(mine.diff, ref.diff, rtol=1e-13)


def test_param_diff_accumulates_bottom_diff_overwrites():
    rng = np.random.default_rng(7)
    x, s = rng.standard_normal((2, 3)), rng.standard_normal(3)
    layer, bottom, top = make_layer('name: "s" type: "Scale" top: "y"', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    once = layer.blobs[0].diff.copy()
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)
    layer, bottom, top = make_layer('name: "s" type: "Scale" top: "y"', [x, s])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True, True], bottom)
    once = bottom[1].diff.copy()
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[1].diff, once)
    np.testing.assert_allclose(once, x.sum(axis=0))


@pytest.mark.parametrize("layer_type,field", [("Scale", "scale_param"), ("Bias", "bias_param")])
def test_errors(layer_type, field):
    with pytest.raises(CaffeError, match="dimension mismatch"):
        make_layer(f'name: "l" type: "{layer_type}" top: "y"',
                   [np.zeros((2, 3, 4)), np.zeros(4)])
    with pytest.raises(CaffeError, match="num_axes"):
        make_layer(f'name: "l" type: "{layer_type}" top: "y" {field} {{ num_axes: -2 }}',
                   [np.zeros((2, 3, 4))])
    with pytest.raises(CaffeError, match="past"):
        make_layer(f'name: "l" type: "{layer_type}" top: "y" {field} {{ axis: 2 num_axes: 2 }}',
                   [np.zeros((2, 3, 4))])
