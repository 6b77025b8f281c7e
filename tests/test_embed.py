"""Embed: lookup against a float64 oracle, gradient checks for the parameters, repeated
indices accumulating, and Caffe's input checks."""
import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from gradcheck import check_gradient, check_gradient_exhaustive, make_layer


def embed_text(num_output=4, input_dim=5, bias=True):
    return (f'name: "e" type: "Embed" bottom: "x" top: "y" embed_param {{ '
            f"num_output: {num_output} input_dim: {input_dim} bias_term: {str(bias).lower()} "
            f'weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')


def build(x, dtype=np.float64, **kw):
    layer, bottom, top = make_layer(embed_text(**kw), [x], dtype=dtype)
    rng = np.random.default_rng(1)
    for blob in layer.blobs:
        blob.data[...] = rng.standard_normal(blob.shape)
    layer.forward(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6,), (2, 3), (2, 1, 3)])
def test_forward_and_gradient(shape, bias):
    idx = np.random.default_rng(0).integers(0, 5, shape)
    layer, bottom, top = build(idx.astype(np.float64), bias=bias)
    assert top[0].shape == shape + (4,)
    expected = layer.blobs[0].data[idx] + (layer.blobs[1].data if bias else 0)
    np.testing.assert_allclose(top[0].data, expected, rtol=0, atol=0)
    check_gradient(layer, bottom, top, check_bottom=[])


def test_exhaustive_tiny_with_repeated_indices():
    layer, bottom, top = build(np.array([1.0, 3.0, 1.0, 1.0]), num_output=2, input_dim=4)
    check_gradient_exhaustive(layer, bottom, top, check_bottom=[])


def test_repeated_indices_accumulate_in_order():
    x = np.array([[2.0, 0.0], [2.0, 2.0]])
    layer, bottom, top = build(x)
    dy = np.random.default_rng(2).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [False], bottom)
    expected = np.zeros((5, 4))
    expected[2] = dy[0, 0] + dy[1, 0] + dy[1, 1]
    expected[0] = dy[0, 1]
    np.testing.assert_allclose(layer.blobs[0].diff, expected)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.reshape(-1, 4).sum(axis=0))
    layer.backward(top, [False], bottom)          # parameter diffs accumulate
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * expected)


def test_float32_forward():
    x = np.array([0.0, 4.0, 2.0])
    l64, _, t64 = build(x)
    l32, _, t32 = build(x, dtype=np.float32)
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-6)


@pytest.mark.parametrize("values,message", [([0.5], "non-integer"), ([5.0], "out of range"),
                                            ([-1.0], "out of range")])
def test_bad_indices(values, message):
    with pytest.raises(CaffeError, match=message):
        build(np.array(values))


def test_no_gradient_for_the_indices():
    layer, bottom, top = build(np.array([1.0, 2.0]))
    with pytest.raises(CaffeError, match="Can't backpropagate to EmbedLayer input"):
        layer.backward(top, [True], bottom)


@pytest.mark.parametrize("kw,message", [({"num_output": 0}, "num_output must be positive"),
                                        ({"input_dim": 0}, "input_dim must be positive")])
def test_setup_errors(kw, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(embed_text(**kw), [np.zeros(2)])
