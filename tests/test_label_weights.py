"""SoftmaxWithLoss with loss_param.label_weights (caffe-jacinto 0.17): one weight per class
on each position's loss term and gradient; the normalizer counts positions."""
import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from gradcheck import check_gradient_exhaustive, make_layer

EPS64 = np.finfo(np.float64).eps
LN2 = np.log(2.0)


def loss_layer(weights, scores, labels, extra=""):
    text = ('name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "loss" '
            f'loss_param {{ {" ".join(f"label_weights: {w}" for w in weights)} {extra} }}')
    return make_layer(text, [scores, labels])


def forward_backward(layer, bottom, top):
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    return float(top[0].data), bottom[0].diff


def test_weighted_loss_and_gradient_by_hand():
    # zero scores: every probability is 1/2; labels 0, 1, 1 with weights 2 and 0.5
    layer, bottom, top = loss_layer([2, 0.5], np.zeros((3, 2)), [0, 1, 1])
    loss, diff = forward_backward(layer, bottom, top)
    # (2 ln2 + 0.5 ln2 + 0.5 ln2) / 3 positions (VALID counts positions, not weights)
    np.testing.assert_allclose(loss, LN2, rtol=5 * EPS64)
    # w[l] / 3 * (1/2 - onehot)
    want = [[-1 / 3, 1 / 3], [1 / 12, -1 / 12], [1 / 12, -1 / 12]]
    np.testing.assert_allclose(diff, want, rtol=5 * EPS64)


def test_ignored_positions_count_nothing_even_outside_the_classes():
    layer, bottom, top = loss_layer([2, 0.5], np.zeros((3, 2)), [0, 1, 255],
                                    "ignore_label: 255")
    loss, diff = forward_backward(layer, bottom, top)
    np.testing.assert_allclose(loss, 1.25 * LN2, rtol=5 * EPS64)  # (2 + 0.5) ln2 / 2
    np.testing.assert_allclose(diff, [[-0.5, 0.5], [0.125, -0.125], [0, 0]], rtol=5 * EPS64)


def test_batch_size_normalization_over_spatial_positions():
    # (1, 2, 2) scores, class axis 1: two positions, labels 1 and 0, weights 3 and 1
    layer, bottom, top = loss_layer([3, 1], np.zeros((1, 2, 2)), [[1, 0]],
                                    "normalization: BATCH_SIZE")
    loss, diff = forward_backward(layer, bottom, top)
    np.testing.assert_allclose(loss, 4 * LN2, rtol=5 * EPS64)  # (1 + 3) ln2 / 1 image
    np.testing.assert_allclose(diff, [[[0.5, -1.5], [-0.5, 1.5]]], rtol=5 * EPS64)


def test_gradient_check():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((2, 3, 2))
    labels = rng.integers(0, 3, (2, 2)).astype(np.float64)
    layer, bottom, top = loss_layer([0.3, 1.7, 2.5], scores, labels)
    check_gradient_exhaustive(layer, bottom, top, check_bottom=[0])


def test_weight_count_must_match_the_classes():
    with pytest.raises(CaffeError, match="label_weights has 3 values, but there are 2 classes"):
        loss_layer([1, 2, 3], np.zeros((2, 2)), [0, 1])
