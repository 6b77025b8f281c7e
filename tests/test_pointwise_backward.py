"""kernels/conv.py's gradients of a 1x1 convolution on images as they lie
(_pointwise_backward, _one_pixel_backward) against a float64 oracle, on one thread and two,
with the images summed one by one and side by side."""
import numpy as np
import pytest

from caffe_lite import threads
from caffe_lite.kernels import conv
from caffe_lite.kernels.conv import ConvGeometry, conv2d_backward

EPS = np.finfo(np.float32).eps


def _oracle(x, w, dy, group):
    """float64 dx, dw, db of y = conv1x1(x, w) per group."""
    n, c = x.shape[:2]
    m = w.shape[0]
    xg = x.reshape(n, group, c // group, -1).astype(np.float64)
    dyg = dy.reshape(n, group, m // group, -1).astype(np.float64)
    wg = w.reshape(group, m // group, c // group).astype(np.float64)
    dx = np.einsum("gmc,ngmp->ngcp", wg, dyg).reshape(x.shape)
    dw = np.einsum("ngmp,ngcp->gmc", dyg, xg).reshape(w.shape)
    return dx, dw, dyg.sum(axis=(0, 3)).reshape(-1)


@pytest.mark.parametrize("concat", [0, 10**6])
@pytest.mark.parametrize("n,c,m,side,group", [
    (5, 6, 4, (3, 4), 1), (4, 8, 6, (7, 7), 2), (7, 3, 5, (1, 1), 1), (6, 4, 8, (1, 1), 4),
    (1, 5, 3, (2, 9), 1), (9, 16, 12, (5, 3), 4)])
def test_gradients_equal_the_oracle_on_one_and_two_threads(monkeypatch, concat, n, c, m,
                                                           side, group):
    monkeypatch.setattr(conv, "POINTWISE_CONCAT_PIXELS", concat)
    rng = np.random.default_rng(n * 100 + c)
    x = rng.standard_normal((n, c) + side, dtype=np.float32)
    w = rng.standard_normal((m, c // group, 1, 1), dtype=np.float32)
    dy = rng.standard_normal((n, m) + side, dtype=np.float32)
    want = _oracle(x, w, dy, group)
    scale = _oracle(np.abs(x), np.abs(w), np.abs(dy), group)
    # terms per sum: dx M/g, dw and db N*P; the workers' parts are added once more
    terms = (m // group, n * side[0] * side[1], n * side[0] * side[1])
    saved = threads.get_num_threads()
    try:
        for count in (1, 2):
            threads.set_num_threads(count)
            dx = np.full_like(x, np.nan)
            dw, db = np.full_like(w, 0.5), np.full(m, 0.5, np.float32)
            conv2d_backward(x, w, dy, ConvGeometry(1, 1, group=group), dx=dx, dw=dw, db=db)
            for got, ref, mag, k, start in zip((dx, dw, db), want, scale, terms, (0, .5, .5)):
                bound = (k + 3) * EPS * (mag + start)
                assert np.all(np.abs(got - start - ref) <= bound)
    finally:
        threads.set_num_threads(saved)


def test_each_path_runs(monkeypatch):
    """A one-pixel 1x1 convolution without groups runs as an InnerProduct's products, any
    other 1x1 convolution on its images as they lie; a padded one is lowered."""
    calls = []
    for name in ("_one_pixel_backward", "_pointwise_backward"):
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    for shape, geo in (((3, 4, 1, 1), ConvGeometry(1, 1)), ((3, 4, 5, 5), ConvGeometry(1, 1)),
                       ((3, 4, 1, 1), ConvGeometry(1, 1, group=2)),
                       ((3, 4, 5, 5), ConvGeometry(1, 1, 1, 1))):
        x = np.ones(shape, np.float32)
        w = np.ones((4, 4 // geo.group, 1, 1), np.float32)
        dy = np.ones((3, 4) + geo.output_shape(*shape[2:]), np.float32)
        conv2d_backward(x, w, dy, geo, dx=np.empty_like(x), dw=np.zeros_like(w))
    assert calls == ["_one_pixel_backward", "_pointwise_backward", "_pointwise_backward"]
