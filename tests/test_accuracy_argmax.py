"""Accuracy and ArgMax against straightforward loops written from Caffe's definitions."""
import numpy as np
import pytest

from gradcheck import make_layer
from caffe_lite.errors import CaffeError


def oracle_accuracy(x, label, axis, top_k, ignore):
    s = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    lab = label.reshape(-1).astype(int)
    classes = x.shape[axis]
    hits, seen = np.zeros(classes), np.zeros(classes)
    correct = count = 0
    for row, l in zip(s, lab):
        if ignore is not None and l == ignore:
            continue
        better = sum(1 for k in range(classes) if k != l and row[k] >= row[l])
        seen[l] += 1
        if better < top_k:
            correct += 1
            hits[l] += 1
        count += 1
    per_class = np.divide(hits, seen, out=np.zeros(classes), where=seen > 0)
    return (correct / count if count else 0.0), per_class


@pytest.mark.parametrize("shape,axis,top_k,ignore", [
    ((20, 5), 1, 1, None),
    ((20, 5), 1, 2, None),
    ((4, 6, 3, 2), 1, 3, 2),
    ((3, 4, 5), 2, 1, None),
    ((3, 4, 5), -2, 2, 0),
])
def test_accuracy(shape, axis, top_k, ignore):
    rng = np.random.default_rng(1)
    # a coarse grid of scores makes ties, which count against the true class
    x = rng.integers(0, 4, shape).astype(np.float64)
    a = axis % len(shape)
    label = rng.integers(0, shape[a], shape[:a] + shape[a + 1:]).astype(np.float64)
    extra = f" ignore_label: {ignore}" if ignore is not None else ""
    layer, bottom, top = make_layer(
        f'name: "a" type: "Accuracy" top: "acc" top: "per_class" '
        f'accuracy_param {{ axis: {axis} top_k: {top_k}{extra} }}', [x, label])
    layer.forward(bottom, top)
    acc, per_class = oracle_accuracy(x, label, a, top_k, ignore)
    assert top[0].shape == () and top[1].shape == (shape[a],)
    assert top[0].data == pytest.approx(acc)
    np.testing.assert_allclose(top[1].data, per_class)


@pytest.mark.parametrize("shape,axis,top_k", [((20, 5), 1, 1), ((20, 5), 1, 2),
                                              ((3, 4, 5), 2, 1), ((1, 10), 1, 5)])
def test_accuracy_of_one_top_without_ignore_label(shape, axis, top_k):
    """The one-top, no-ignore_label path (kernels/accuracy.py) against the oracle, with
    fractional labels truncated toward zero as Caffe's static_cast<int> does."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, shape).astype(np.float32)
    a = axis % len(shape)
    whole = rng.integers(0, shape[a], shape[:a] + shape[a + 1:])
    label = (whole + rng.uniform(0, 0.99, whole.shape)).astype(np.float32)
    label[label < 1] -= 0.5                   # in (-1, 1): truncates to class 0
    layer, bottom, top = make_layer(
        f'name: "a" type: "Accuracy" top: "acc" accuracy_param {{ axis: {axis} '
        f'top_k: {top_k} }}', [x, label])
    layer.forward(bottom, top)
    assert top[0].data == pytest.approx(oracle_accuracy(x, whole, a, top_k, None)[0])
    for bad in (np.nan, -1.0, float(shape[a])):
        bottom[1].data.reshape(-1)[0] = bad
        with pytest.raises(CaffeError, match="label values"):
            layer.forward(bottom, top)


def test_accuracy_all_ignored_and_no_backward():
    layer, bottom, top = make_layer(
        'name: "a" type: "Accuracy" top: "acc" accuracy_param { ignore_label: 1 }',
        [np.zeros((3, 2)), np.ones(3)])
    layer.forward(bottom, top)
    assert top[0].data == 0
    layer.backward(top, [False, False], bottom)
    with pytest.raises(CaffeError, match="backward"):
        layer.backward(top, [True, False], bottom)


def test_accuracy_errors():
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('name: "a" type: "Accuracy" top: "acc" accuracy_param { top_k: 4 }',
                   [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(CaffeError, match="Number of labels"):
        make_layer('name: "a" type: "Accuracy" top: "acc"',
                   [np.zeros((2, 3, 2)), np.zeros(2)])
    layer, bottom, top = make_layer('name: "a" type: "Accuracy" top: "acc"',
                                    [np.zeros((2, 3)), np.array([0.0, 5.0])])
    with pytest.raises(CaffeError, match="label values"):
        layer.forward(bottom, top)


def oracle_topk(values, k):
    """Caffe's std::greater on (value, index) pairs: larger value, then larger index first."""
    order = sorted(range(len(values)), key=lambda j: (values[j], j), reverse=True)[:k]
    return order, [values[j] for j in order]


@pytest.mark.parametrize("top_k,out_max_val", [(1, False), (3, False), (2, True)])
def test_argmax_flat(top_k, out_max_val):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, (4, 3, 2, 2)).astype(np.float64)   # many ties
    layer, bottom, top = make_layer(
        f'name: "m" type: "ArgMax" top: "y" argmax_param {{ top_k: {top_k} '
        f'out_max_val: {str(out_max_val).lower()} }}', [x])
    layer.forward(bottom, top)
    assert top[0].shape == (4, 2 if out_max_val else 1, top_k, 1)
    for i in range(4):
        idx, vals = oracle_topk(list(x[i].ravel()), top_k)
        np.testing.assert_array_equal(top[0].data[i, 0, :, 0], idx)
        if out_max_val:
            np.testing.assert_array_equal(top[0].data[i, 1, :, 0], vals)


@pytest.mark.parametrize("axis,top_k,out_max_val", [(1, 2, False), (2, 1, True), (-1, 3, False),
                                                    (0, 2, True)])
def test_argmax_axis(axis, top_k, out_max_val):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (3, 4, 5)).astype(np.float64)
    layer, bottom, top = make_layer(
        f'name: "m" type: "ArgMax" top: "y" argmax_param {{ axis: {axis} top_k: {top_k} '
        f'out_max_val: {str(out_max_val).lower()} }}', [x])
    layer.forward(bottom, top)
    a = axis % 3
    shape = list(x.shape)
    shape[a] = top_k
    assert top[0].shape == tuple(shape)
    moved = np.moveaxis(x, a, -1)
    got = np.moveaxis(top[0].data, a, -1)
    for pos in np.ndindex(moved.shape[:-1]):
        idx, vals = oracle_topk(list(moved[pos]), top_k)
        np.testing.assert_array_equal(got[pos], vals if out_max_val else idx)


def test_argmax_2d_gets_three_axes_and_errors():
    layer, bottom, top = make_layer('name: "m" type: "ArgMax" top: "y"',
                                    [np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 5.0]])])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 1, 1)
    np.testing.assert_array_equal(top[0].data.ravel(), [1, 2])
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('name: "m" type: "ArgMax" top: "y" argmax_param { top_k: 4 }',
                   [np.zeros((2, 3))])
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('name: "m" type: "ArgMax" top: "y" argmax_param { top_k: 3 axis: 0 }',
                   [np.zeros((2, 3))])
    with pytest.raises(CaffeError, match="backward"):
        layer.backward(top, [True], bottom)
