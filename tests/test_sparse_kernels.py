"""kernels/sparse.py: CSR construction, the tiled CSR product, CCNMM and the CSR inner product,
against float64 dense products, over random shapes and SSL's sparsity patterns."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from caffe_lite import threads
from caffe_lite.kernels import sparse
from sparsity import SETTINGS, f32_bound, keeps, patterns, seeds, sparsify

dims = st.integers(1, 9)


def random_sparse(m, k, pattern, seed, keep, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return sparsify(rng.standard_normal((m, k)), pattern, rng, keep).astype(dtype), rng


def assert_product_close(got, a, b):
    """got vs a @ b, within the float32 rounding bound of a K-term sum."""
    want = a.astype(np.float64) @ b.astype(np.float64)
    bound = f32_bound(a.shape[1], np.abs(a).astype(np.float64) @ np.abs(b))
    assert (np.abs(got - want) <= bound).all()


def split_always():
    """Force the row split over three threads, whatever the size and the machine."""
    return mock.patch.multiple(sparse, SPLIT_MIN_MACS=0), mock.patch.object(
        threads, "get_num_threads", lambda: 3)


@SETTINGS
@given(dims, dims, patterns, seeds, keeps, st.sampled_from([np.float32, np.float64]))
def test_csr_round_trip(m, k, pattern, seed, keep, dtype):
    a, _ = random_sparse(m, k, pattern, seed, keep, dtype)
    csr = sparse.csr_from_dense(a)
    assert csr.indptr.dtype == np.int64 and csr.indices.dtype == np.int32
    assert csr.data.dtype == dtype and csr.nnz == np.count_nonzero(a)
    for i in range(m):       # columns ascending within a row, no explicit zeros
        row = csr.indices[csr.indptr[i]:csr.indptr[i + 1]]
        assert (np.diff(row) > 0).all()
    assert (csr.data != 0).all()
    np.testing.assert_array_equal(sparse.csr_to_dense(csr), a)
    dense = sparse.csr_from_dense(a, keep_zeros=True)
    assert dense.nnz == a.size
    np.testing.assert_array_equal(sparse.csr_to_dense(dense), a)


@SETTINGS
@given(dims, dims, st.integers(1, 40), st.integers(1, 7), patterns, seeds, keeps,
       st.booleans())
def test_csr_matmul_matches_dense(m, k, n, tile, pattern, seed, keep, split):
    a, rng = random_sparse(m, k, pattern, seed, keep)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)        # every element must be written
    csr = sparse.csr_from_dense(a)
    with mock.patch.object(sparse, "TILE", tile):     # tiny tiles: several per row
        if split:
            p1, p2 = split_always()
            with p1, p2:
                sparse.csr_matmul(csr, b, out)
        else:
            sparse.csr_matmul(csr, b, out)
    assert_product_close(out, a, b)
    if pattern == "zero":
        assert (out == 0).all()


def test_csr_matmul_split_is_bitwise_the_same():
    """Each row is one thread's, summed in the same order: splitting changes no bit."""
    a, rng = random_sparse(37, 50, "elementwise", 3, 0.3)
    b = rng.standard_normal((50, 23)).astype(np.float32)
    csr = sparse.csr_from_dense(a)
    one = sparse.csr_matmul(csr, b, np.empty((37, 23), np.float32))
    p1, p2 = split_always()
    with p1, p2:
        many = sparse.csr_matmul(csr, b, np.empty((37, 23), np.float32))
    np.testing.assert_array_equal(one, many)


def test_csr_matmul_checks_shapes():
    csr = sparse.csr_from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="csr_matmul"):
        sparse.csr_matmul(csr, np.ones((4, 2), np.float32), np.empty((3, 2), np.float32))


@SETTINGS
@given(dims, dims, st.integers(1, 12), patterns, seeds, keeps)
def test_compact_drops_exactly_the_zero_rows_and_columns(m, k, n, pattern, seed, keep):
    a, rng = random_sparse(m, k, pattern, seed, keep)
    c = sparse.compact(a, gather_macs=0)
    np.testing.assert_array_equal(c.rows, np.flatnonzero(np.abs(a).sum(axis=1)))
    np.testing.assert_array_equal(c.cols, np.flatnonzero(np.abs(a).sum(axis=0)))
    np.testing.assert_array_equal(c.w, a[np.ix_(c.rows, c.cols)])
    b = rng.standard_normal((k, n)).astype(np.float32)
    for compacted in (c, sparse.compact(a)):     # exact, and the one the engine uses
        out = np.full((m, n), np.nan, np.float32)
        sparse.ccnmm(compacted, b, out)
        assert_product_close(out, a, b)
        zero_rows = np.abs(a).sum(axis=1) == 0
        assert (out[zero_rows] == 0).all()


def test_compact_keeps_columns_not_worth_a_gather():
    """One all-zero column of 100 in a 4-row matrix saves 4 multiply-adds per output column
    and costs a gather of 99 rows: kept."""
    a = np.ones((4, 100), np.float32)
    a[:, 7] = 0
    assert len(sparse.compact(a).cols) == 100
    assert len(sparse.compact(a, gather_macs=0).cols) == 99
    a[:, 10:] = 0                                  # 90 of 100 columns: dropped
    assert len(sparse.compact(a).cols) == 9


def test_ccnmm_uses_the_scratch_buffers():
    a = np.zeros((6, 8), np.float32)
    a[2, 3], a[4, 5] = 1.5, -2.0
    b = np.arange(8 * 5, dtype=np.float32).reshape(8, 5)
    asked = []

    def scratch(name, shape, dtype):
        asked.append(name)
        return np.empty(shape, dtype)

    out = sparse.ccnmm(sparse.compact(a, 0), b, np.empty((6, 5), np.float32), scratch)
    np.testing.assert_array_equal(out, a @ b)
    assert asked == ["ccnmm_b", "ccnmm_out"]


@SETTINGS
@given(st.integers(1, 6), dims, dims, patterns, seeds, keeps, st.booleans())
def test_inner_product_csr(batch, n_out, k, pattern, seed, keep, bias_term):
    w, rng = random_sparse(n_out, k, pattern, seed, keep)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32) if bias_term else None
    y = sparse.inner_product_csr(x, sparse.csr_from_dense(w), bias)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    mag = np.abs(x).astype(np.float64) @ np.abs(w.T)
    if bias_term:
        want += bias
        mag += np.abs(bias)
    assert y.shape == (batch, n_out) and y.dtype == np.float32
    assert (np.abs(y - want) <= f32_bound(k + 1, mag)).all()
