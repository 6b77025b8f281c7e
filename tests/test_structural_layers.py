"""Structural and element-wise layers: Concat, Slice, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, MVN, Clip, Parameter, Swish, SPP.

Forward against naive float64 NumPy oracles written here, gradients by central differences
(one random direction per case, per element on a tiny case), float32 bit-exactness where
Caffe's order of operations is known, and the golden blobs from BVLC Caffe.
"""
import math

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from gradcheck import check_gradient, check_gradient_exhaustive, make_layer


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _run(text, arrays, **kw):
    layer, bottom, top = make_layer(text, arrays, **kw)
    layer.forward(bottom, top)
    return layer, bottom, top


def _spaced(shape, seed, gap=0.1):
    """Distinct values at least `gap` apart (no ties, no kinks within a finite-diff step)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n) * gap - n * gap / 2 + gap / 2).reshape(shape)


# --------------------------------------------------------------------------------- Concat
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("nbottom", [2, 3])
def test_concat(axis, nbottom):
    base = (2, 3, 5, 4)
    arrays = []
    for i in range(nbottom):
        shape = list(base)
        shape[axis] = 1 + 2 * i
        arrays.append(_rand(*shape, seed=i))
    text = f'type: "Concat" top: "t" concat_param {{ axis: {axis} }}'
    layer, bottom, top = _run(text, arrays)
    np.testing.assert_array_equal(top[0].data, np.concatenate(arrays, axis=axis))
    check_gradient(layer, bottom, top)


def test_concat_legacy_dim_single_bottom_and_exhaustive():
    a, b = _rand(2, 3, 2, seed=1), _rand(2, 1, 2, seed=2)
    layer, bottom, top = _run('type: "Concat" top: "t" concat_param { concat_dim: 1 }', [a, b])
    np.testing.assert_array_equal(top[0].data, np.concatenate([a, b], axis=1))
    check_gradient_exhaustive(layer, bottom, top)
    # one bottom: the top aliases the data, the gradient passes through
    layer, bottom, top = _run('type: "Concat" top: "t"', [a])
    assert np.shares_memory(top[0].data, bottom[0].data)
    check_gradient(layer, bottom, top)


def test_concat_errors():
    with pytest.raises(CaffeError, match="same shape"):
        make_layer('type: "Concat" top: "t"', [np.zeros((2, 3, 4)), np.zeros((2, 3, 5))])
    with pytest.raises(CaffeError, match="#axes"):
        make_layer('type: "Concat" top: "t"', [np.zeros((2, 3, 4)), np.zeros((2, 3))])
    with pytest.raises(CaffeError, match="not both"):
        make_layer('type: "Concat" top: "t" concat_param { axis: 1 concat_dim: 1 }',
                   [np.zeros((2, 3)), np.zeros((2, 3))])


# ---------------------------------------------------------------------------------- Slice
@pytest.mark.parametrize("axis,points,ntop", [
    (1, [], 3), (1, [1, 4], 3), (0, [1], 2), (-1, [2, 3, 4], 4), (-2, [], 5), (2, [3], 2)])
def test_slice(axis, points, ntop):
    x = _rand(2, 6, 5, 7, seed=3)
    tops = " ".join(f'top: "t{i}"' for i in range(ntop))
    sp = " ".join(f"slice_point: {p}" for p in points)
    text = f'type: "Slice" {tops} slice_param {{ axis: {axis} {sp} }}'
    layer, bottom, top = _run(text, [x])
    expected = np.split(x, points if points else ntop, axis=axis)
    for t, e in zip(top, expected):
        np.testing.assert_array_equal(t.data, e)
    check_gradient(layer, bottom, top)


def test_slice_legacy_dim_single_top_and_exhaustive():
    x = _rand(3, 4, 2, seed=4)
    text = 'type: "Slice" top: "a" top: "b" slice_param { slice_dim: 2 }'
    layer, bottom, top = _run(text, [x])
    np.testing.assert_array_equal(top[1].data, x[:, :, 1:])
    check_gradient_exhaustive(layer, bottom, top)
    layer, bottom, top = _run('type: "Slice" top: "a"', [x])
    assert np.shares_memory(top[0].data, bottom[0].data)
    check_gradient(layer, bottom, top)


def test_slice_errors():
    x = np.zeros((2, 6))
    with pytest.raises(CaffeError, match="evenly"):
        make_layer('type: "Slice" top: "a" top: "b" top: "c" top: "d"', [x])
    with pytest.raises(CaffeError, match="slice_point"):
        make_layer('type: "Slice" top: "a" top: "b" slice_param { slice_point: 6 }', [x])
    with pytest.raises(CaffeError, match="one fewer"):
        make_layer('type: "Slice" top: "a" top: "b" slice_param { slice_point: 1 '
                   'slice_point: 2 }', [x])


# -------------------------------------------------------------------------------- Eltwise
@pytest.mark.parametrize("nbottom", [2, 3, 4])
@pytest.mark.parametrize("stable", [True, False])
def test_eltwise_prod(nbottom, stable):
    arrays = [_rand(2, 3, 4, seed=10 + i) for i in range(nbottom)]
    text = ('type: "Eltwise" top: "t" eltwise_param { operation: PROD '
            f'stable_prod_grad: {str(stable).lower()} }}')
    layer, bottom, top = _run(text, arrays)
    np.testing.assert_allclose(top[0].data, np.prod(arrays, axis=0), rtol=1e-14)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("coeff", [None, [1.0, -0.5], [0.3, 2.0, -1.7], [-1.0, 0.0, 1.0]])
def test_eltwise_sum(coeff):
    n = len(coeff) if coeff else 3
    arrays = [_rand(3, 5, seed=20 + i) for i in range(n)]
    cs = " ".join(f"coeff: {c}" for c in coeff) if coeff else ""
    layer, bottom, top = _run(f'type: "Eltwise" top: "t" eltwise_param {{ {cs} }}', arrays)
    weights = [np.float64(np.float32(c)) for c in coeff] if coeff else [1.0] * n
    np.testing.assert_allclose(top[0].data, sum(w * a for w, a in zip(weights, arrays)),
                               rtol=1e-14, atol=1e-14)
    check_gradient(layer, bottom, top)


def test_eltwise_sum_float32_is_one_rounding_per_axpy():
    a, b = _rand(1000, seed=5).astype(np.float32), _rand(1000, seed=6).astype(np.float32)
    layer, bottom, top = _run('type: "Eltwise" top: "t" eltwise_param { coeff: 1 coeff: 0.3 }',
                              [a, b], dtype=np.float32)
    c = np.float64(np.float32(0.3))
    np.testing.assert_array_equal(top[0].data, (a.astype(np.float64) + c * b).astype(np.float32))


@pytest.mark.parametrize("nbottom", [2, 3, 5])
def test_eltwise_max(nbottom):
    spaced = _spaced((nbottom, 3, 4, 5), seed=7)
    arrays = list(spaced)
    layer, bottom, top = _run('type: "Eltwise" top: "t" eltwise_param { operation: MAX }',
                              arrays)
    np.testing.assert_array_equal(top[0].data, np.max(arrays, axis=0))
    np.testing.assert_array_equal(layer.max_idx, np.argmax(arrays, axis=0))
    check_gradient(layer, bottom, top)


def test_eltwise_max_ties_and_exhaustive():
    # Caffe: bottom 0 wins only when strictly greater than bottom 1; later bottoms only
    # when strictly greater than the running max
    a = np.array([1.0, 2.0, 3.0, 0.0])
    b = np.array([1.0, 1.0, 4.0, 0.0])
    c = np.array([1.0, 2.0, 0.0, 5.0])
    layer, bottom, top = _run('type: "Eltwise" top: "t" eltwise_param { operation: MAX }',
                              [a, b, c])
    np.testing.assert_array_equal(layer.max_idx, [1, 0, 1, 2])
    top[0].diff[...] = 1
    layer.backward(top, [True] * 3, bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 1, 0, 0])
    np.testing.assert_array_equal(bottom[1].diff, [1, 0, 1, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0, 1])
    # in place on bottom 0, as Caffe's per-element loop allows
    layer, bottom, top = make_layer('type: "Eltwise" top: "t" eltwise_param { operation: MAX }',
                                    [a, b, c])
    layer.forward(bottom, bottom[:1])
    np.testing.assert_array_equal(bottom[0].data, [1, 2, 4, 5])
    arrays = list(_spaced((3, 2, 3), seed=8))
    layer, bottom, top = _run('type: "Eltwise" top: "t" eltwise_param { operation: MAX }',
                              arrays)
    check_gradient_exhaustive(layer, bottom, top)


def test_eltwise_prod_and_sum_exhaustive():
    arrays = [_rand(2, 3, seed=30 + i) for i in range(3)]
    for text in ['eltwise_param { operation: PROD }',
                 'eltwise_param { operation: PROD stable_prod_grad: false }',
                 'eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 }']:
        layer, bottom, top = _run(f'type: "Eltwise" top: "t" {text}', arrays)
        check_gradient_exhaustive(layer, bottom, top)


def test_eltwise_errors():
    x = np.zeros((2, 3))
    with pytest.raises(CaffeError, match="one coefficient per bottom"):
        make_layer('type: "Eltwise" top: "t" eltwise_param { coeff: 1 }', [x, x])
    with pytest.raises(CaffeError, match="only takes coefficients for summation"):
        make_layer('type: "Eltwise" top: "t" eltwise_param { operation: PROD coeff: 1 '
                   'coeff: 1 }', [x, x])
    with pytest.raises(CaffeError, match="same shape"):
        make_layer('type: "Eltwise" top: "t"', [x, np.zeros((3, 2))])
    with pytest.raises(CaffeError, match="at least 2"):
        make_layer('type: "Eltwise" top: "t"', [x])


# -------------------------------------------------------------------------------- Flatten
def _flat_shape(shape, axis, end):
    n = len(shape)
    a, e = axis % n, end % n
    return shape[:a] + (int(np.prod(shape[a:e + 1])),) + shape[e + 1:]


@pytest.mark.parametrize("axis,end", [(1, -1), (0, -1), (2, 3), (1, 2), (-3, -2), (3, 3),
                                      (0, 0)])
def test_flatten(axis, end):
    x = _rand(2, 3, 5, 3, seed=9)
    text = f'type: "Flatten" top: "t" flatten_param {{ axis: {axis} end_axis: {end} }}'
    layer, bottom, top = _run(text, [x])
    assert top[0].shape == _flat_shape(x.shape, axis, end)
    np.testing.assert_array_equal(top[0].data, x.reshape(top[0].shape))
    assert np.shares_memory(top[0].data, bottom[0].data)
    check_gradient(layer, bottom, top)
    assert np.shares_memory(top[0].diff, bottom[0].diff)


def test_flatten_exhaustive_and_in_place():
    x = _rand(2, 2, 3, seed=11)
    layer, bottom, top = _run('type: "Flatten" top: "t"', [x])
    check_gradient_exhaustive(layer, bottom, top)
    layer, bottom, top = make_layer('type: "Flatten" top: "t"', [x])
    with pytest.raises(CaffeError, match="in-place"):
        layer.reshape(bottom, bottom)
    with pytest.raises(CaffeError, match="comes before"):
        make_layer('type: "Flatten" top: "t" flatten_param { axis: 2 end_axis: 1 }', [x])


# -------------------------------------------------------------------------------- Reshape
@pytest.mark.parametrize("dims,axis,num_axes,expected", [
    ([0, -1], 0, -1, (2, 60)),
    ([0, -1, 4], 0, -1, (2, 15, 4)),
    ([-1], 0, -1, (120,)),
    ([0, 0, 0, -1], 0, -1, (2, 3, 4, 5)),
    ([1], 1, 0, (2, 1, 3, 4, 5)),           # insert an axis
    ([1, 1], -1, 0, (2, 3, 4, 5, 1, 1)),    # append axes
    ([2, -1], 1, 2, (2, 2, 6, 5)),          # replace axes 1..2
    ([-1], 1, 2, (2, 12, 5)),
    ([0, 0, 20], 0, -1, (2, 3, 20)),
    ([3, 2, 4, 5], 0, -1, (3, 2, 4, 5)),
    ([-1, 1], -2, 1, (2, 3, 4, 5, 1)),      # replace the last axis
])
def test_reshape(dims, axis, num_axes, expected):
    x = _rand(2, 3, 4, 5, seed=12)
    d = " ".join(f"dim: {v}" for v in dims)
    text = (f'type: "Reshape" top: "t" reshape_param {{ shape {{ {d} }} axis: {axis} '
            f'num_axes: {num_axes} }}')
    layer, bottom, top = _run(text, [x])
    assert top[0].shape == expected
    np.testing.assert_array_equal(top[0].data, x.reshape(expected))
    assert np.shares_memory(top[0].data, bottom[0].data)
    check_gradient(layer, bottom, top)


def test_reshape_follows_bottom_and_exhaustive():
    x = _rand(2, 3, 2, seed=13)
    layer, bottom, top = _run('type: "Reshape" top: "t" reshape_param { shape { dim: 0 '
                              'dim: -1 } }', [x])
    check_gradient_exhaustive(layer, bottom, top)
    bottom[0].reshape(4, 3, 2)
    bottom[0].data[...] = 7
    layer.forward(bottom, top)
    assert top[0].shape == (4, 6) and np.all(top[0].data == 7)


@pytest.mark.parametrize("text,match", [
    ("shape { dim: -1 dim: -1 }", "multiple -1"),
    ("shape { dim: 7 }", "count"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no corresponding"),
    ("shape { dim: 7 dim: -1 }", "divisible"),
    ("shape { dim: 1 } axis: 5", "out of range"),
    ("shape { dim: 1 } axis: 1 num_axes: 4", "out of range"),
])
def test_reshape_errors(text, match):
    with pytest.raises(CaffeError, match=match):
        make_layer(f'type: "Reshape" top: "t" reshape_param {{ {text} }}',
                   [np.zeros((2, 3, 4, 5))])


# ----------------------------------------------------------------------------------- Crop
@pytest.mark.parametrize("axis,offsets", [
    (2, []), (2, [1]), (2, [2, 1]), (1, [1, 0, 2]), (-1, [3]), (-2, [1, 2]), (0, [1])])
def test_crop(axis, offsets):
    x = _rand(3, 4, 6, 7, seed=14)
    ref = np.zeros((2, 3, 4, 3))
    off = " ".join(f"offset: {o}" for o in offsets)
    text = f'type: "Crop" top: "t" crop_param {{ axis: {axis} {off} }}'
    layer, bottom, top = _run(text, [x, ref])
    start = axis % 4
    index = []
    for i in range(4):
        if i < start:
            index.append(slice(None))
        else:
            o = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
            index.append(slice(o, o + ref.shape[i]))
    np.testing.assert_array_equal(top[0].data, x[tuple(index)])
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_crop_exhaustive_and_errors():
    layer, bottom, top = _run('type: "Crop" top: "t" crop_param { axis: 1 offset: 1 }',
                              [_rand(2, 4, 3, seed=15), np.zeros((5, 2, 2))])
    assert top[0].shape == (2, 2, 2)
    check_gradient_exhaustive(layer, bottom, top, check_bottom=[0])
    with pytest.raises(CaffeError, match="out-of-bounds"):
        make_layer('type: "Crop" top: "t" crop_param { offset: 3 }',
                   [np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))])
    with pytest.raises(CaffeError, match="number of offset"):
        make_layer('type: "Crop" top: "t" crop_param { offset: 1 offset: 1 offset: 1 }',
                   [np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))])


# ----------------------------------------------------------------------------------- Tile
@pytest.mark.parametrize("axis,tiles", [(0, 2), (1, 3), (2, 1), (-1, 4), (-3, 2)])
def test_tile(axis, tiles):
    x = _rand(2, 3, 5, seed=16)
    layer, bottom, top = _run(
        f'type: "Tile" top: "t" tile_param {{ axis: {axis} tiles: {tiles} }}', [x])
    reps = [1] * 3
    reps[axis] = tiles
    np.testing.assert_array_equal(top[0].data, np.tile(x, reps))
    check_gradient(layer, bottom, top)


def test_tile_float32_backward_order_and_exhaustive():
    # Caffe copies the first tile's diff, then adds the others one by one
    x = np.zeros((3, 1), np.float32)
    layer, bottom, top = make_layer('type: "Tile" top: "t" tile_param { axis: -1 tiles: 40 }',
                                    [x], dtype=np.float32)
    layer.forward(bottom, top)
    top[0].diff[...] = _rand(3, 40, seed=17).astype(np.float32) * 1e3
    layer.backward(top, [True], bottom)
    expected = top[0].diff[:, 0].copy()
    for t in range(1, 40):
        expected += top[0].diff[:, t]
    np.testing.assert_array_equal(bottom[0].diff[:, 0], expected)
    layer, bottom, top = _run('type: "Tile" top: "t" tile_param { tiles: 3 }',
                              [_rand(2, 2, seed=18)])
    check_gradient_exhaustive(layer, bottom, top)
    with pytest.raises(CaffeError, match="tiles"):
        make_layer('type: "Tile" top: "t"', [x])
    with pytest.raises(CaffeError, match="positive"):
        make_layer('type: "Tile" top: "t" tile_param { tiles: 0 }', [x])


# ------------------------------------------------------------------------------ Reduction
_REDUCE = {
    "SUM": lambda r: r.sum(axis=1),
    "ASUM": lambda r: np.abs(r).sum(axis=1),
    "SUMSQ": lambda r: (r * r).sum(axis=1),
    "MEAN": lambda r: r.mean(axis=1),
}


@pytest.mark.parametrize("op", list(_REDUCE))
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("coeff", [1.0, -0.5, 2.5])
def test_reduction(op, axis, coeff):
    # spaced: ASUM's |x| has a kink at 0
    x = _spaced((2, 3, 5), seed=19, gap=0.07)
    text = (f'type: "Reduction" top: "t" reduction_param {{ operation: {op} axis: {axis} '
            f'coeff: {coeff} }}')
    layer, bottom, top = _run(text, [x])
    a = axis % 3
    assert top[0].shape == x.shape[:a]
    rows = x.reshape(int(np.prod(x.shape[:a])), -1)
    c = np.float64(np.float32(coeff))
    np.testing.assert_allclose(top[0].data.ravel(), c * _REDUCE[op](rows), rtol=1e-12,
                               atol=1e-12)
    check_gradient(layer, bottom, top)


def test_reduction_exhaustive_and_many_rows():
    for op in _REDUCE:
        layer, bottom, top = _run(
            f'type: "Reduction" top: "t" reduction_param {{ operation: {op} axis: 1 '
            'coeff: 0.7 }', [_spaced((2, 3), seed=20)])
        check_gradient_exhaustive(layer, bottom, top)
    # more rows than the per-row BLAS loop takes: the vectorised path
    x = _rand(1500, 3, seed=21)
    for op in _REDUCE:
        layer, bottom, top = _run(
            f'type: "Reduction" top: "t" reduction_param {{ operation: {op} axis: -1 }}', [x])
        np.testing.assert_allclose(top[0].data, _REDUCE[op](x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ MVN
def _mvn(x, normalize_variance, across_channels, eps):
    n = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    r = x.reshape(n, -1)
    y = r - r.mean(axis=1, keepdims=True)
    if normalize_variance:
        y = y / (np.sqrt((y * y).mean(axis=1, keepdims=True)) + eps)
    return y.reshape(x.shape)


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 7), (2, 5), (4,)])
def test_mvn(normalize_variance, across_channels, shape):
    # (2, 5) per channel and (4,) leave one element per row: top 0, gradient 0
    x = _rand(*shape, seed=22) * 2 + 0.5
    text = (f'type: "MVN" top: "t" mvn_param {{ normalize_variance: '
            f'{str(normalize_variance).lower()} across_channels: '
            f'{str(across_channels).lower()} }}')
    layer, bottom, top = _run(text, [x])
    legacy = shape + (1,) * (4 - len(shape))
    eps = np.float64(np.float32(1e-9))
    np.testing.assert_allclose(top[0].data,
                               _mvn(x.reshape(legacy), normalize_variance, across_channels,
                                    eps).reshape(shape), rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


def test_mvn_exhaustive_eps_and_axes_limit():
    x = _rand(2, 2, 3, seed=23)
    layer, bottom, top = _run('type: "MVN" top: "t"', [x])
    check_gradient_exhaustive(layer, bottom, top)
    layer, bottom, top = _run('type: "MVN" top: "t" mvn_param { eps: 0.5 }', [x])
    np.testing.assert_allclose(top[0].data, _mvn(x, True, False, 0.5), rtol=1e-12)
    with pytest.raises(CaffeError, match="> 4 axes"):
        make_layer('type: "MVN" top: "t"', [np.zeros((1, 1, 1, 1, 2))])


def test_mvn_in_place():
    x = _rand(2, 3, 4, seed=24)
    layer, bottom, _ = make_layer('type: "MVN" top: "t"', [x])
    layer.forward(bottom, bottom)
    np.testing.assert_allclose(bottom[0].data, _mvn(x, True, False, 1e-9), rtol=1e-12)


# ----------------------------------------------------------------------------------- Clip
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (0.0, 6.0), (-1.0, -0.25)])
def test_clip(lo, hi):
    x = _spaced((3, 4, 5), seed=25, gap=0.05) + 0.013   # off the bounds by > eps
    layer, bottom, top = _run(f'type: "Clip" top: "t" clip_param {{ min: {lo} max: {hi} }}',
                              [x])
    np.testing.assert_array_equal(top[0].data, np.clip(x, lo, hi))
    check_gradient(layer, bottom, top)


def test_clip_boundaries_nan_and_exhaustive():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan])
    layer, bottom, top = _run('type: "Clip" top: "t" clip_param { min: -0.5 max: 0.5 }', [x])
    np.testing.assert_array_equal(top[0].data, [-0.5, -0.5, 0, 0.5, 0.5, -0.5])
    top[0].diff[...] = 2
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 2, 2, 2, 0, 0])
    layer, bottom, top = _run('type: "Clip" top: "t" clip_param { min: -0.5 max: 0.5 }',
                              [_spaced((2, 3), seed=26, gap=0.23)])
    check_gradient_exhaustive(layer, bottom, top)
    with pytest.raises(CaffeError, match="min and max"):
        make_layer('type: "Clip" top: "t" clip_param { min: 0 }', [x])


# ------------------------------------------------------------------------------ Parameter
def test_parameter():
    text = 'type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 dim: 1 } }'
    layer, bottom, top = make_layer(text, [])
    assert layer.blobs[0].shape == (2, 3, 1) and top[0].shape == (2, 3, 1)
    assert not layer.blobs[0].data.any()
    layer.blobs[0].data[...] = _rand(2, 3, 1, seed=27)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data)
    layer.blobs[0].data[0, 0, 0] = 42.0          # an in-place solver update shows at once
    assert top[0].data[0, 0, 0] == 42.0
    check_gradient(layer, bottom, top)
    check_gradient_exhaustive(layer, bottom, top)
    # backward accumulates, as every parameter does (iter_size)
    layer.blobs[0].diff[...] = 1
    top[0].diff[...] = 2
    layer.backward(top, [], bottom)
    assert np.all(layer.blobs[0].diff == 3)
    layer.param_propagate_down = [False]
    layer.backward(top, [], bottom)
    assert np.all(layer.blobs[0].diff == 3)
    with pytest.raises(CaffeError, match="0 bottom"):
        make_layer(text, [np.zeros(2)])


# ---------------------------------------------------------------------------------- Swish
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, -1.3])
def test_swish(beta):
    x = _rand(3, 4, 5, seed=28) * 3
    layer, bottom, top = _run(f'type: "Swish" top: "t" swish_param {{ beta: {beta} }}', [x])
    b = np.float64(np.float32(beta))
    np.testing.assert_allclose(top[0].data, x / (1 + np.exp(-b * x)), rtol=1e-13, atol=1e-15)
    check_gradient(layer, bottom, top)


def test_swish_float32_rounding_and_exhaustive():
    x = (_rand(200, seed=29) * 4).astype(np.float32)
    layer, bottom, top = make_layer('type: "Swish" top: "t" swish_param { beta: 1.7 }', [x],
                                    dtype=np.float32)
    layer.forward(bottom, top)
    top[0].diff[...] = _rand(200, seed=30).astype(np.float32)
    layer.backward(top, [True], bottom)
    beta = np.float32(1.7)
    for i in range(0, 200, 7):   # Caffe's C++ expressions, one scalar at a time
        s = np.float32(0.5 * math.tanh(0.5 * float(beta * x[i])) + 0.5)
        y = x[i] * s
        assert top[0].data[i] == y
        by = float(beta * y)
        assert bottom[0].diff[i] == np.float32(float(top[0].diff[i]) * (by + float(s) * (1.0 - by)))
    layer, bottom, top = _run('type: "Swish" top: "t"', [_rand(2, 3, seed=31)])
    check_gradient_exhaustive(layer, bottom, top)


# ------------------------------------------------------------------------------------ SPP
def _pool(x, kh, kw, ph, pw, method):
    n, c, h, w = x.shape
    oh = int(math.ceil((h + 2 * ph - kh) / kh)) + 1
    ow = int(math.ceil((w + 2 * pw - kw) / kw)) + 1
    if ph and (oh - 1) * kh >= h + ph:
        oh -= 1
    if pw and (ow - 1) * kw >= w + pw:
        ow -= 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * kh - ph, j * kw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else \
                win.sum(axis=(2, 3)) / size
    return out


@pytest.mark.skipif("Pooling" not in __import__("caffe_lite.layers", fromlist=["x"])
                    .layer_types(), reason="no Pooling layer")
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 3, 5, 4)), (2, (2, 3, 7, 5)),
                                          (3, (1, 2, 8, 6))])
def test_spp(pool, height, shape):
    x = _spaced(shape, seed=32, gap=0.05)
    layer, bottom, top = _run(
        f'type: "SPP" top: "t" spp_param {{ pyramid_height: {height} pool: {pool} }}', [x])
    levels = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-shape[2] // bins), -(-shape[3] // bins)
        p = _pool(x, kh, kw, (kh * bins - shape[2] + 1) // 2, (kw * bins - shape[3] + 1) // 2,
                  pool)
        levels.append(p if height == 1 else p.reshape(shape[0], -1))
    expected = levels[0] if height == 1 else np.concatenate(levels, axis=1)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-13)
    check_gradient(layer, bottom, top)


# ---------------------------------------------------------------------------- golden Caffe
_GOLDEN = [
    # case, layer text, bottoms, tops
    ("layers_a", 'type: "Concat" top: "t"', ["pool1", "pool2"], ["cat"]),
    ("layers_a", 'type: "Flatten" top: "t"', ["gpool"], ["flat"]),
    ("layers_a", 'type: "Eltwise" top: "t" eltwise_param { operation: SUM coeff: 1.0 '
                 'coeff: -0.5 }', ["fc1", "fc2"], ["sum"]),
    ("layers_b", 'type: "Eltwise" top: "t" eltwise_param { operation: PROD }',
     ["lrn1", "lrn2"], ["prod"]),
    ("layers_b", 'type: "Eltwise" top: "t" eltwise_param { operation: MAX }',
     ["sig", "tanh"], ["max"]),
    ("layers_b", 'type: "Slice" top: "a" top: "b" slice_param { slice_point: 3 axis: 1 }',
     ["pow"], ["s1", "s2"]),
    ("layers_b", 'type: "Concat" top: "t" concat_param { axis: 1 }', ["bnll", "exp"],
     ["cat"]),
    ("layers_b", 'type: "Reshape" top: "t" reshape_param { shape { dim: 0 dim: -1 dim: 4 } }',
     ["cat"], ["reshape"]),
]


@pytest.mark.parametrize("case,text,bottoms,tops", _GOLDEN,
                         ids=[f"{c}-{t[0]}" for c, _, _, t in _GOLDEN])
def test_golden_bit_exact(shared, case, text, bottoms, tops):
    path = shared / "golden" / case / "golden.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    g = np.load(path)
    layer, bottom, top = make_layer(text, [g[f"train/blob/{b}"] for b in bottoms],
                                    dtype=np.float32)
    layer.forward(bottom, top)
    for t, name in zip(top, tops):
        np.testing.assert_array_equal(t.data, g[f"train/blob/{name}"])
        t.diff[...] = g[f"train/diff/{name}"]
    layer.backward(top, [True] * len(bottom), bottom)
    for b, name in zip(bottom, bottoms):
        np.testing.assert_array_equal(b.diff, g[f"train/diff/{name}"])
