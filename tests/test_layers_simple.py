"""Input, DummyData, Split and Silence: the layers the Net itself relies on."""
import numpy as np
import pytest
from gradcheck import check_gradient, make_layer

from caffe_lite import common
from caffe_lite.blob import Blob
from caffe_lite.errors import CaffeError


# --- Input -------------------------------------------------------------------------------
def test_input_one_shape_for_all_tops():
    layer, _, top = make_layer('name: "in" type: "Input" top: "a" top: "b" '
                               'input_param { shape { dim: 2 dim: 3 } }', [])
    assert [t.shape for t in top] == [(2, 3), (2, 3)]


def test_input_shape_per_top_and_reshape_keeps_caller_shape():
    layer, bottom, top = make_layer(
        'name: "in" type: "Input" top: "a" top: "b" '
        'input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }', [])
    assert [t.shape for t in top] == [(2, 3), (4,)]
    top[0].reshape(5, 3)
    layer.forward(bottom, top)
    assert top[0].shape == (5, 3)


def test_input_shape_count_mismatch():
    with pytest.raises(CaffeError, match="once per top"):
        make_layer('name: "in" type: "Input" top: "a" top: "b" top: "c" '
                   'input_param { shape { dim: 1 } shape { dim: 2 } }', [])


# --- DummyData ---------------------------------------------------------------------------
def test_dummy_data_default_constant_zero():
    _, _, top = make_layer('name: "d" type: "DummyData" top: "a" '
                           'dummy_data_param { shape { dim: 2 dim: 2 } }', [])
    assert top[0].shape == (2, 2) and np.all(top[0].data == 0)


def test_dummy_data_refills_only_random_tops():
    common.set_random_seed(3)
    layer, bottom, top = make_layer(
        'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
        'shape { dim: 3 dim: 4 } data_filler { type: "gaussian" } '
        'data_filler { type: "constant" value: 7 } }', [])
    assert np.all(top[1].data == 7)
    top[1].data[...] = -1          # a constant top is filled once, at setup
    layer.forward(bottom, top)
    first = top[0].data.copy()
    layer.forward(bottom, top)
    assert not np.array_equal(first, top[0].data)
    assert np.all(top[1].data == -1)


def test_dummy_data_legacy_dims():
    _, _, top = make_layer(
        'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
        'num: 2 channels: 3 channels: 1 height: 4 width: 5 '
        'data_filler { type: "constant" value: 1 } }', [])
    assert [t.shape for t in top] == [(2, 3, 4, 5), (2, 1, 4, 5)]
    assert np.all(top[1].data == 1)


@pytest.mark.parametrize("text,match", [
    ('shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1', "Both shape and legacy"),
    ('num: 1 channels: 1 height: 1', "'width' once"),
    ('shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }', "'shape' once"),
    ('shape { dim: 1 } data_filler { } data_filler { } data_filler { }', "data fillers"),
])
def test_dummy_data_errors(text, match):
    with pytest.raises(CaffeError, match=match):
        make_layer(f'name: "d" type: "DummyData" top: "a" top: "b" '
                   f'dummy_data_param {{ {text} }}', [])


# --- Split -------------------------------------------------------------------------------
def test_split_shares_data_and_sums_diffs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    layer, bottom, top = make_layer('name: "s" type: "Split" bottom: "x" top: "a" top: "b" '
                                    'top: "c"', [x])
    layer.forward(bottom, top)
    for t in top:
        assert np.shares_memory(t.data, bottom[0].data)
        np.testing.assert_array_equal(t.data, x)
    diffs = [rng.standard_normal(x.shape) for _ in top]
    for t, d in zip(top, diffs):
        t.diff[...] = d
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, sum(diffs))


@pytest.mark.parametrize("ntop", [1, 2, 3])
def test_split_gradient(ntop):
    x = np.random.default_rng(1).standard_normal((3, 5))
    tops = " ".join(f'top: "t{i}"' for i in range(ntop))
    layer, bottom, top = make_layer(f'name: "s" type: "Split" bottom: "x" {tops}', [x])
    check_gradient(layer, bottom, top)


def test_split_rejects_in_place():
    layer, bottom, top = make_layer('name: "s" type: "Split" bottom: "x" top: "y"',
                                    [np.zeros(3)])
    with pytest.raises(CaffeError, match="in-place"):
        layer.reshape(bottom, [bottom[0]])


def test_split_follows_bottom_reshape():
    layer, bottom, top = make_layer('name: "s" type: "Split" bottom: "x" top: "a" top: "b"',
                                    [np.zeros((2, 2))])
    bottom[0].reshape(4, 3)
    bottom[0].data[...] = 5
    layer.forward(bottom, top)
    assert top[1].shape == (4, 3) and np.all(top[1].data == 5)


# --- Silence -----------------------------------------------------------------------------
def test_silence_zeroes_bottom_diffs():
    layer, bottom, top = make_layer('name: "s" type: "Silence" bottom: "a" bottom: "b"',
                                    [np.ones(3), np.ones((2, 2))])
    assert top == []
    for b in bottom:
        b.diff[...] = 3
    layer.forward(bottom, top)
    layer.backward(top, [True, False], bottom)
    assert np.all(bottom[0].diff == 0) and np.all(bottom[1].diff == 3)


def test_silence_needs_a_bottom():
    with pytest.raises(CaffeError, match="at least 1 bottom"):
        make_layer('name: "s" type: "Silence"', [])


def test_blob_counts_checked():
    with pytest.raises(CaffeError, match="takes 1 bottom"):
        make_layer('name: "s" type: "Split" bottom: "a" bottom: "b" top: "c"',
                   [np.zeros(1), np.zeros(1)])
    with pytest.raises(CaffeError, match="takes 0 bottom"):
        from gradcheck import layer_param
        from caffe_lite.layers import create_layer
        layer = create_layer(layer_param('name: "i" type: "Input" top: "x"'))
        layer.setup([Blob((1,))], [Blob(())])
