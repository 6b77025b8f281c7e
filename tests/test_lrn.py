"""LRN (both regions) against naive NumPy oracles, and gradient checks."""
import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, make_layer
from caffe_lite.errors import CaffeError


def oracle_across(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    scale = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - pre), min(c, ch + pre + 1)
        scale[:, ch] = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
    return x * scale ** -beta


def oracle_within(x, size, alpha, beta):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    padded = np.zeros((n, c, h + 2 * pre, w + 2 * pre))
    padded[:, :, pre:pre + h, pre:pre + w] = x ** 2
    pooled = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            pooled[:, :, i, j] = padded[:, :, i:i + size, j:j + size].sum(axis=(2, 3))
    return x * (1 + alpha * pooled / size ** 2) ** -beta


def text(region, size, alpha, beta, k):
    return (f'name: "n" type: "LRN" top: "y" lrn_param {{ norm_region: {region} '
            f'local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}')


CASES = [  # shape, local_size, alpha, beta, k
    ((2, 7, 3, 4), 5, 1.0, 0.75, 1.0),
    ((2, 3, 4, 3), 3, 0.5, 0.75, 2.0),
    ((1, 2, 5, 2), 5, 2.0, 0.5, 1.5),     # fewer channels than the window
    ((3, 4, 2, 2), 1, 0.3, 1.2, 0.8),
    ((1, 6, 6, 5), 7, 0.1, 0.6, 1.0),
]


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradient(region, case):
    shape, size, alpha, beta, k = case
    x = np.random.default_rng(len(shape) + size).standard_normal(shape)
    layer, bottom, top = make_layer(text(region, size, alpha, beta, k), [x])
    layer.forward(bottom, top)
    # the schema stores alpha/beta/k as float32
    a, b, kk = (float(np.float32(v)) for v in (alpha, beta, k))
    if region == "ACROSS_CHANNELS":
        want = oracle_across(x, size, a, b, kk)
    else:
        want = oracle_within(x, size, a, b)   # k is unused, as in Caffe
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10, atol=1e-12)
    check_gradient(layer, bottom, top, directions=2)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_exhaustive_tiny(region):
    x = np.random.default_rng(3).standard_normal((1, 4, 3, 2))
    layer, bottom, top = make_layer(text(region, 3, 0.7, 0.75, 1.5), [x])
    check_gradient_exhaustive(layer, bottom, top)


def test_defaults_and_float32():
    x = np.random.default_rng(4).standard_normal((2, 6, 3, 3))
    layer, bottom, top = make_layer('name: "n" type: "LRN" top: "y"', [x], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, oracle_across(x, 5, 1.0, 0.75, 1.0), rtol=2e-6)


def test_even_size_rejected():
    with pytest.raises(CaffeError, match="odd"):
        make_layer(text("ACROSS_CHANNELS", 4, 1, 0.75, 1), [np.zeros((1, 4, 2, 2))])


@pytest.mark.parametrize("region,writes", [("ACROSS_CHANNELS", True), ("WITHIN_CHANNEL", False)])
def test_propagate_down_as_caffe(region, writes):
    # Caffe's CrossChannelBackward_cpu writes dx whatever propagate_down says
    x = np.random.default_rng(5).standard_normal((1, 3, 2, 2))
    layer, bottom, top = make_layer(text(region, 3, 1, 0.75, 1), [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [False], bottom)
    assert (np.abs(bottom[0].diff).sum() > 0) == writes
