"""Softmax and SoftmaxWithLoss against NumPy oracles; Caffe's loss normalisation rules."""
import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, make_layer
from caffe_lite.errors import CaffeError
from caffe_lite.kernels.losses import normalizer as get_normalizer


def oracle_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape,axis", [
    ((4, 7), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), 2), ((2, 3, 4, 5), -1), ((3, 4), 0),
    ((5,), 0), ((2, 1, 3), 1),
])
def test_softmax(shape, axis):
    x = np.random.default_rng(1).standard_normal(shape) * 3
    layer, bottom, top = make_layer(
        f'name: "s" type: "Softmax" top: "y" softmax_param {{ axis: {axis} }}', [x])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, oracle_softmax(x, axis), rtol=1e-12)
    check_gradient(layer, bottom, top, directions=2)


def test_softmax_large_inputs_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    layer, bottom, top = make_layer('name: "s" type: "Softmax" top: "y"', [x],
                                    dtype=np.float32)
    layer.forward(bottom, top)
    assert np.isfinite(top[0].data).all()
    np.testing.assert_allclose(top[0].data, oracle_softmax(x, 1), rtol=1e-6)


def test_softmax_exhaustive_tiny():
    layer, bottom, top = make_layer('name: "s" type: "Softmax" top: "y"',
                                    [np.random.default_rng(2).standard_normal((2, 3, 2))])
    check_gradient_exhaustive(layer, bottom, top)


def oracle_loss(x, label, axis, ignore, mode):
    prob = oracle_softmax(x, axis)
    p = np.moveaxis(prob, axis, -1)
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    lab = label.reshape(p.shape[:-1]).astype(int)
    keep = lab != ignore if ignore is not None else np.ones(lab.shape, bool)
    picked = np.take_along_axis(p, np.where(keep, lab, 0)[..., None], axis=-1)[..., 0]
    total = -np.log(np.maximum(picked, np.finfo(np.float32).tiny))[keep].sum()
    norm = {"FULL": outer * inner, "VALID": keep.sum(), "BATCH_SIZE": outer, "NONE": 1}[mode]
    return total / max(1, norm), prob


def loss_text(axis=1, extra="", tops=('top: "loss"',)):
    return (f'name: "l" type: "SoftmaxWithLoss" {" ".join(tops)} '
            f'softmax_param {{ axis: {axis} }} loss_param {{ {extra} }}')


LOSS_CASES = [  # shape, axis, ignore_label, normalization
    ((5, 4), 1, None, "VALID"),
    ((3, 4, 2, 3), 1, None, "VALID"),
    ((3, 4, 2, 3), 1, 2, "VALID"),
    ((3, 4, 2, 3), 1, 2, "FULL"),
    ((3, 4, 2, 3), 1, 0, "BATCH_SIZE"),
    ((3, 4, 2, 3), 1, 1, "NONE"),
    ((2, 3, 5), 2, None, "VALID"),
    ((2, 3, 5), -2, 4, "FULL"),
]


@pytest.mark.parametrize("case", LOSS_CASES)
def test_softmax_loss(case):
    shape, axis, ignore, mode = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 2
    a = axis % len(shape)
    lshape = shape[:a] + shape[a + 1:]
    label = rng.integers(0, shape[a], lshape).astype(np.float64)
    extra = f"normalization: {mode}" + (f" ignore_label: {ignore}" if ignore is not None else "")
    layer, bottom, top = make_layer(loss_text(a, extra), [x, label])
    loss = layer.forward(bottom, top)
    want, _ = oracle_loss(x, label, a, ignore, mode)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    assert loss == pytest.approx(want, rel=1e-12)
    check_gradient(layer, bottom, top, check_bottom=[0], directions=2)


def test_loss_weight_scales_gradient_and_prob_top():
    rng = np.random.default_rng(4)
    x, label = rng.standard_normal((4, 3)), rng.integers(0, 3, 4).astype(float)
    text = ('name: "l" type: "SoftmaxWithLoss" top: "loss" top: "prob" loss_weight: 2.5 '
            'loss_weight: 0')
    layer, bottom, top = make_layer(text, [x, label])
    loss = layer.forward(bottom, top)
    want, prob = oracle_loss(x, label, 1, None, "VALID")
    assert loss == pytest.approx(2.5 * want)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-12)
    layer.backward(top, [True, False], bottom)
    onehot = np.eye(3)[label.astype(int)]
    np.testing.assert_allclose(bottom[0].diff, 2.5 * (prob - onehot) / 4, rtol=1e-12)


def test_legacy_normalize_flag():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4))
    label = rng.integers(0, 3, (2, 4)).astype(float)
    label[0, 0] = 1
    for flag, mode in (("true", "VALID"), ("false", "BATCH_SIZE")):
        layer, bottom, top = make_layer(loss_text(extra=f"normalize: {flag} ignore_label: 1"),
                                        [x, label])
        layer.forward(bottom, top)
        np.testing.assert_allclose(top[0].data, oracle_loss(x, label, 1, 1, mode)[0])
    # an explicit normalization wins over the legacy flag
    layer, bottom, top = make_layer(loss_text(extra="normalize: false normalization: FULL"),
                                    [x, label])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, oracle_loss(x, label, 1, None, "FULL")[0])


def test_all_ignored_gives_zero_and_floor_of_one():
    x = np.random.default_rng(6).standard_normal((3, 4))
    layer, bottom, top = make_layer(loss_text(extra="ignore_label: 2"), [x, np.full(3, 2.0)])
    layer.forward(bottom, top)
    assert top[0].data == 0
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0)
    assert get_normalizer(1, 3, 1, 0) == 1.0


def test_tiny_probability_clamped():
    x = np.array([[0.0, -200.0]])
    layer, bottom, top = make_layer(loss_text(), [x, np.array([1.0])], dtype=np.float32)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, -np.log(np.finfo(np.float32).tiny), rtol=1e-6)


def test_loss_exhaustive_tiny():
    rng = np.random.default_rng(7)
    layer, bottom, top = make_layer(loss_text(), [rng.standard_normal((2, 3, 2)),
                                                   np.array([[0.0, 2.0], [1.0, 1.0]])])
    check_gradient_exhaustive(layer, bottom, top, check_bottom=[0])


def test_loss_errors():
    x = np.zeros((2, 3))
    with pytest.raises(CaffeError, match="Number of labels"):
        make_layer(loss_text(), [np.zeros((2, 3, 2)), np.zeros((2, 3))])
    with pytest.raises(CaffeError, match="same first dimension"):
        make_layer(loss_text(), [x, np.zeros(3)])
    layer, bottom, top = make_layer(loss_text(), [x, np.array([0.0, 3.0])])
    with pytest.raises(CaffeError, match="label values"):
        layer.forward(bottom, top)
    layer, bottom, top = make_layer(loss_text(), [x, np.array([0.0, 1.0])])
    layer.forward(bottom, top)
    with pytest.raises(CaffeError, match="label inputs"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


def test_softmax_backward_ignores_propagate_down_as_caffe():
    x = np.random.default_rng(8).standard_normal((2, 3))
    layer, bottom, top = make_layer('name: "s" type: "Softmax" top: "y"', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = [[1, 0, 0], [0, 1, 0]]
    layer.backward(top, [False], bottom)
    assert np.abs(bottom[0].diff).sum() > 0
