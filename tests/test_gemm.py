"""kernels/gemm.py: the products split over the cores, and OpenBLAS kept on one thread for
a whole net pass (its idle threads would otherwise spin on the cores the next layer needs)."""
import numpy as np
import pytest

from caffe_lite import threads
from caffe_lite.kernels import gemm
from tests.gradcheck import make_layer

NEEDS_OPENBLAS = pytest.mark.skipif(threads.openblas() is None,
                                    reason="NumPy's OpenBLAS not found in this process")


@pytest.fixture
def two_workers(monkeypatch):
    """Split every product, over two workers, whatever this machine has."""
    monkeypatch.setattr(gemm, "batch_workers", lambda: 2)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(gemm, "ONE_ROW_SPLIT_MIN_MACS", 0)     # one row: matrix-vector


def assert_product_close(got, a, b, start=None):
    """got == start + a @ b up to rounding. Both got and the reference sum k products in
    some order; each such dot product is off by at most about k/2 * eps * sum |a_i b_i|
    (the classic gamma_k bound), so they differ by at most k * eps * (|a| @ |b|), plus one
    rounding of the final add when accumulating. No constant tuned to one BLAS or CPU."""
    eps = np.finfo(got.dtype).eps
    k = a.shape[1]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 @ b64 if start is None else start + a64 @ b64
    bound = k * eps * (np.abs(a64) @ np.abs(b64))
    if start is not None:
        bound += eps * np.abs(want)
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= bound).all(), f"max excess {(err - bound).max():.3g}"


@pytest.mark.parametrize("m, k, n", [(7, 5, 3), (3, 5, 7), (1, 4, 9), (9, 4, 1), (64, 33, 64),
                                     (40, 1000, 24), (1, 2048, 600),
                                     (4, 33, 64), (2, 1000, 24)])   # few rows: (b.T @ a.T).T
@pytest.mark.parametrize("transposed", [False, True])
def test_parallel_matmul_matches_numpy(two_workers, m, k, n, transposed):
    rng = np.random.default_rng(m * 100 + n)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transposed else (k, n)).astype(np.float32)
    a, b = (a.T, b.T) if transposed else (a, b)
    out = np.full((m, n), np.nan, np.float32)
    gemm.parallel_matmul(a, b, out)
    assert_product_close(out, a, b)

    start = rng.standard_normal((m, n)).astype(np.float32)
    acc = start.copy()
    gemm.parallel_matmul(a, b, acc, accumulate=True)
    assert_product_close(acc, a, b, start=start)


def test_the_bound_catches_a_wrong_product():
    """The tolerance is tight enough to fail on one wrong term in a 33-long sum."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 33)).astype(np.float32)
    b = rng.standard_normal((33, 64)).astype(np.float32)
    wrong = a @ b
    wrong[5, 7] -= a[5, 3] * b[3, 7]
    with pytest.raises(AssertionError, match="max excess"):
        assert_product_close(wrong, a, b)


def test_parallel_matmul_into_a_strided_view(two_workers):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 10))
    big = np.zeros((6, 20))
    gemm.parallel_matmul(a, b, big[:, ::2])
    assert_product_close(big[:, ::2], a, b)
    assert not big[:, 1::2].any()
    big[...] = 0
    gemm.parallel_matmul(a[:1], b, big[:1, ::2])       # one row, through a scratch row
    assert_product_close(big[:1, ::2], a[:1], b)
    assert not big[:1, 1::2].any() and not big[1:].any()


def test_small_products_stay_on_the_calling_thread(monkeypatch):
    calls = []
    monkeypatch.setattr(gemm, "split_batch", lambda *args, **kw: calls.append(args))
    out = np.empty((2, 2))
    gemm.parallel_matmul(np.eye(2), np.ones((2, 2)), out)
    assert calls == [] and (out == 1).all()


def test_split_batch_follows_the_thread_count(monkeypatch):
    def slices(n):
        return gemm.split_batch(n, lambda worker, start, stop: (worker, start, stop))
    monkeypatch.setattr(threads, "_num_threads", 1)
    assert slices(6) == [(0, 0, 6)]
    monkeypatch.setattr(threads, "_num_threads", 3)
    assert slices(6) == [(0, 0, 2), (1, 2, 4), (2, 4, 6)]
    assert slices(2) == [(0, 0, 1), (1, 1, 2)]


@NEEDS_OPENBLAS
def test_a_lone_slice_gets_the_thread_count_and_gives_blas_back(monkeypatch):
    """A batch of one cannot be split, so its GEMMs run on OpenBLAS with caffe-lite's
    thread count; the user's OpenBLAS count is back afterwards, in a pass or not."""
    get, put = threads.openblas()
    before = get()
    monkeypatch.setattr(threads, "_num_threads", 2)
    put(3)
    try:
        assert gemm.split_batch(1, lambda worker, start, stop: get()) == [2]
        assert get() == 3
        with threads.blas_single_threaded():
            assert gemm.split_batch(1, lambda worker, start, stop: get()) == [2]
            assert get() == 1
            assert gemm.split_batch(4, lambda worker, start, stop: get()) == [1, 1]
        assert get() == 3
    finally:
        put(before)


@NEEDS_OPENBLAS
def test_net_passes_never_run_openblas_on_its_own_threads(monkeypatch):
    """Every layer of a forward and backward pass, InnerProduct's products included, sees
    OpenBLAS on one thread; the count is back to what it was after the pass."""
    from caffe_lite.layers.inner_product import InnerProductLayer
    get, put = threads.openblas()
    before = get()
    put(2)
    seen = []
    original = gemm._matmul_into

    def spy(a, b, out, accumulate, ws):
        seen.append(get())
        original(a, b, out, accumulate, ws)
    monkeypatch.setattr(gemm, "_matmul_into", spy)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 0)
    try:
        layer, bottom, top = make_layer(
            'type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 6 '
            'weight_filler { type: "gaussian" } }', [np.ones((8, 5))])
        assert isinstance(layer, InnerProductLayer)
        layer.forward(bottom, top)
        top[0].diff[...] = 1
        layer.backward(top, [True], bottom)
        assert len(seen) >= 3 and set(seen) == {1}
        assert get() == 2
    finally:
        put(before)


def test_blas_writable_views():
    c = np.zeros((6, 8), np.float32)
    assert gemm._blas_writable(c)
    assert gemm._blas_writable(c[:, 2:5])            # a column slice: ldc = 8
    assert not gemm._blas_writable(c[:, ::2])        # no unit stride along rows
    assert not gemm._blas_writable(c.T)              # column-major
    assert not gemm._blas_writable(np.zeros((2, 3, 4), np.float32))


def test_matmul_into_a_column_slice_writes_only_that_slice():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 9))
    out = np.full((5, 12), 7.0)
    gemm._matmul_into(a, b, out[:, 2:11], False, gemm.WORKSPACE)
    np.testing.assert_allclose(out[:, 2:11], a @ b, rtol=1e-12, atol=1e-12)
    assert (out[:, :2] == 7).all() and (out[:, 11:] == 7).all()
