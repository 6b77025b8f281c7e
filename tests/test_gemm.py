"""kernels/gemm.py: the products split over the cores, and OpenBLAS kept on one thread for
a whole net pass (its idle threads would otherwise spin on the cores the next layer needs)."""
import numpy as np
import pytest

from caffe_lite.kernels import gemm
from tests.gradcheck import make_layer

NEEDS_OPENBLAS = pytest.mark.skipif(gemm._blas() is None,
                                    reason="NumPy's OpenBLAS not found in this process")


@pytest.fixture
def two_workers(monkeypatch):
    """Split every product, over two workers, whatever this machine has."""
    monkeypatch.setattr(gemm, "batch_workers", lambda: 2)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 0)


@pytest.mark.parametrize("m, k, n", [(7, 5, 3), (3, 5, 7), (1, 4, 9), (9, 4, 1), (64, 33, 64)])
@pytest.mark.parametrize("transposed", [False, True])
def test_parallel_matmul_matches_numpy(two_workers, m, k, n, transposed):
    rng = np.random.default_rng(m * 100 + n)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transposed else (k, n)).astype(np.float32)
    a, b = (a.T, b.T) if transposed else (a, b)
    out = np.full((m, n), np.nan, np.float32)
    gemm.parallel_matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)

    start = rng.standard_normal((m, n)).astype(np.float32)
    acc = start.copy()
    gemm.parallel_matmul(a, b, acc, accumulate=True)
    np.testing.assert_allclose(acc, start + a @ b, rtol=1e-5, atol=1e-6)


def test_parallel_matmul_into_a_strided_view(two_workers):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 10))
    big = np.zeros((6, 20))
    gemm.parallel_matmul(a, b, big[:, ::2])
    np.testing.assert_allclose(big[:, ::2], a @ b, rtol=1e-12)
    assert not big[:, 1::2].any()


def test_small_products_stay_on_the_calling_thread(monkeypatch):
    calls = []
    monkeypatch.setattr(gemm, "split_batch", lambda *args, **kw: calls.append(args))
    out = np.empty((2, 2))
    gemm.parallel_matmul(np.eye(2), np.ones((2, 2)), out)
    assert calls == [] and (out == 1).all()


@NEEDS_OPENBLAS
def test_single_threaded_scope_nests_and_restores():
    get, put = gemm._blas()
    before = get()
    put(2)
    try:
        with gemm.blas_single_threaded():
            assert get() == 1 and gemm.batch_workers() == 2
            with gemm.blas_single_threaded():
                assert get() == 1 and gemm.batch_workers() == 2
            assert get() == 1
        assert get() == 2
        with pytest.raises(KeyError):
            with gemm.blas_single_threaded():
                raise KeyError("boom")
        assert get() == 2
    finally:
        put(before)


@NEEDS_OPENBLAS
def test_a_lone_slice_gets_every_blas_thread_back():
    """A batch of one cannot be split, so its GEMMs use OpenBLAS's own threads."""
    get, put = gemm._blas()
    before = get()
    put(2)
    try:
        with gemm.blas_single_threaded():
            seen = gemm.split_batch(1, lambda worker, start, stop: get())
            assert seen == [2] and get() == 1
            seen = gemm.split_batch(4, lambda worker, start, stop: get())
            assert seen == [1, 1]
    finally:
        put(before)


@NEEDS_OPENBLAS
def test_net_passes_never_run_openblas_on_its_own_threads(monkeypatch):
    """Every layer of a forward and backward pass, InnerProduct's products included, sees
    OpenBLAS on one thread; the count is back to what it was after the pass."""
    from caffe_lite.layers.inner_product import InnerProductLayer
    get, put = gemm._blas()
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
