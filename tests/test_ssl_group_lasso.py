"""SSL's rules (caffe_lite/compress/group_lasso.py) on small arrays: each group lasso's gradient
against central differences of its own term (float64, one random direction per case), a case
worked out by hand, the tiling errors, per-element decay, the connectivity masks and the
sparsity percentages."""
import numpy as np
import pytest

from caffe_lite.compress import group_lasso as gl
from caffe_lite.errors import CaffeError

F = np.float32
STEP = 1e-4      # float64 central differences
THRESHOLD = 1e-6


def directional_check(fn, w, rng):
    """fn(w) -> (gradient, term): the gradient along one random direction equals the central
    difference of the term, relative to max(|a|, |n|, 1) as Caffe's GradientChecker."""
    v = rng.standard_normal(w.shape)
    grad, _ = fn(w)
    analytic = float(np.sum(grad * v))
    numeric = (fn(w + STEP * v)[1] - fn(w - STEP * v)[1]) / (2 * STEP)
    scale = max(abs(analytic), abs(numeric), 1.0)
    assert abs(analytic - numeric) <= THRESHOLD * scale, (analytic, numeric)


# (shape, group, (ydimen, xdimen)): conv weights with and without groups, an InnerProduct.
CASES = [
    ((6, 3, 3, 3), 1, (2, 3)),
    ((8, 2, 3, 3), 2, (4, 9)),
    ((6, 4, 1, 1), 3, (3, 2)),
    ((4, 216), 1, (2, 8)),
    ((5,), 1, (5, 1)),
]


@pytest.mark.parametrize("shape, group, block", CASES, ids=str)
@pytest.mark.parametrize("kind", ["block", "breadth", "kernel_shape"])
def test_gradient_is_the_derivative_of_the_term(shape, group, block, kind):
    rng = np.random.default_rng(abs(hash((shape, kind))) % 2**32)
    w = rng.standard_normal(shape)
    lam = 0.37
    fn = {"block": lambda x: gl.block_lasso(x, *block, lam),
          "breadth": lambda x: gl.breadth_lasso(x, lam),
          "kernel_shape": lambda x: gl.kernel_shape_lasso(x, group, lam)}[kind]
    directional_check(fn, w, rng)


def naive_group_lasso(mat, groups, lam):
    """(gradient, term) from an explicit list of index groups over a matrix."""
    grad = np.zeros_like(mat)
    term = 0.0
    for idx in groups:
        norm = np.sqrt(np.sum(mat[idx] ** 2))
        term += norm
        if norm:
            grad[idx] = mat[idx] / norm
    return lam * grad, lam * term


@pytest.mark.parametrize("shape, group, block", CASES, ids=str)
def test_groups_are_rows_columns_per_conv_group_and_blocks(shape, group, block):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(shape)
    w.reshape(shape[0], -1)[0] = 0          # an all-zero row: its gradient is 0
    mat = w.reshape(shape[0], -1)
    rows, cols = mat.shape
    per = rows // group
    ydim, xdim = block
    expected = {
        "breadth": [np.s_[r, :] for r in range(rows)],
        "kernel_shape": [np.s_[g * per:(g + 1) * per, c] for g in range(group)
                         for c in range(cols)],
        "block": [np.s_[by:by + ydim, bx:bx + xdim] for by in range(0, rows, ydim)
                  for bx in range(0, cols, xdim)],
    }
    got = {"breadth": gl.breadth_lasso(w, 0.5),
           "kernel_shape": gl.kernel_shape_lasso(w, group, 0.5),
           "block": gl.block_lasso(w, ydim, xdim, 0.5)}
    for kind, groups in expected.items():
        want_grad, want_term = naive_group_lasso(mat, groups, 0.5)
        np.testing.assert_allclose(got[kind][0].reshape(rows, cols), want_grad, rtol=1e-12)
        assert got[kind][1] == pytest.approx(want_term, rel=1e-12)


def test_block_lasso_by_hand():
    # blocks of one row x two columns: norms 5 and 0
    w = np.array([[3, 4], [0, 0]], F)
    grad, term = gl.block_lasso(w, 1, 2, 2.0)
    np.testing.assert_array_equal(grad, np.array([[1.2, 1.6], [0, 0]], F))
    assert term == F(10) and grad.dtype == F and term.dtype == F


@pytest.mark.parametrize("shape, block", [((6, 3, 3, 3), (4, 3)), ((6, 3, 3, 3), (2, 5)),
                                          ((4, 216), (3, 8)), ((4, 216), (0, 1))])
def test_blocks_that_do_not_tile_are_one_line_errors(shape, block):
    w = np.ones(shape, F)
    with pytest.raises(CaffeError) as err:
        gl.block_lasso(w, *block, 0.1, what="layer 'conv1' param 0")
    message = str(err.value)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    assert "\n" not in message
    assert message.startswith("layer 'conv1' param 0: ")
    assert f"ydimen {block[0]} x xdimen {block[1]}" in message
    assert f"{rows}x{cols}" in message and " ".join(map(str, shape)) in message


def test_kernel_shape_groups_must_split_the_rows():
    with pytest.raises(CaffeError, match="layer 'c' param 0: 6 rows do not split into 4 groups"):
        gl.kernel_shape_lasso(np.ones((6, 2), F), 4, 0.1, what="layer 'c' param 0")


@pytest.mark.parametrize("kind", ["L2", "L1"])
def test_elementwise_decay_multiplies_the_decay_per_element(kind):
    w = np.array([[0.5, -2.0], [1.0, 0.0]], F)
    m = np.array([[1.0, 0.0], [3.0, 2.0]], F)
    grad, term = gl.elementwise_decay(w, m, kind, 0.1)
    if kind == "L2":
        np.testing.assert_array_equal(grad, F(0.1) * (w * m))
        assert term == pytest.approx(0.05 * (0.25 + 3.0), rel=1e-6)
    else:
        np.testing.assert_array_equal(grad, F(0.1) * (np.sign(w) * m))
        assert term == pytest.approx(0.1 * (0.5 + 3.0), rel=1e-6)
    plain, _ = gl.elementwise_decay(w, np.ones_like(w), kind, 0.1)
    assert gl.plain_decay_term(w, kind, 0.1) == gl.elementwise_decay(w, np.ones_like(w), kind,
                                                                      0.1)[1]
    np.testing.assert_array_equal(plain, F(0.1) * (w if kind == "L2" else np.sign(w)))


def test_zero_out_and_eltwise_mask_use_the_forks_threshold():
    w = np.array([1e-4, -1e-4, 9.9e-5, -9.9e-5, 0.0, 0.5], F)
    assert gl.zero_mask(w).tolist() == [False, False, True, True, True, False]
    gl.zero_out(w)
    np.testing.assert_array_equal(w, np.array([1e-4, -1e-4, 0, 0, 0, 0.5], F))
    assert gl.eltwise_mask(w).tolist() == [True, True, False, False, False, True]


def test_grpwise_mask_freezes_all_zero_rows_and_columns_within_each_group():
    # 4 filters in 2 groups of 2, 3 columns each
    w = np.array([[1, 0, 2],
                  [0, 0, 0],     # all-zero row
                  [0, 0, 5],
                  [0, 3, 0]], F)  # group 2: column 0 all zero
    expected = np.array([[1, 0, 1],   # group 1: column 1 all zero
                         [0, 0, 0],
                         [0, 1, 1],
                         [0, 1, 1]], bool)
    np.testing.assert_array_equal(gl.grpwise_mask(w, 2), expected)
    whole = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(gl.grpwise_mask(w, 1), whole)


def test_sparsity_percentages():
    w = np.array([[0, 0, 0, 0],
                  [0, 5e-5, 0, 7],
                  [0, 0, 0, 0],
                  [0, 1, 0, 0]], F)
    assert gl.element_sparsity(w) == F(100) * F(14) / F(16)   # 5e-5 counts as zero
    assert gl.row_sparsity(w) == F(50)
    assert gl.column_sparsity(w) == F(50)                      # columns 0 and 2
    # rows, columns and blocks count exact zeros: 5e-5 keeps its 2x2 block alive
    assert gl.block_sparsity(w, 2, 2) == F(25)
    assert gl.block_sparsity(w, 1, 4) == F(50)
