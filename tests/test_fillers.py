"""Caffe's fillers: values, statistics and the argument checks of include/caffe/filler.hpp."""
import numpy as np
import pytest

from caffe_lite import common
from caffe_lite.blob import Blob
from caffe_lite.errors import CaffeError
from caffe_lite.fillers import fill
from caffe_lite.proto import caffe_pb2


def filler(**kw):
    return caffe_pb2.FillerParameter(**kw)


@pytest.fixture(autouse=True)
def seed():
    common.set_random_seed(1701)


def test_constant_fills_value_and_defaults_to_zero():
    b = Blob((2, 3, 4), np.float32)
    fill(b, filler(type="constant", value=2.5))
    assert np.all(b.data == 2.5)
    arr = np.ones((5,))
    fill(arr, caffe_pb2.FillerParameter())
    assert np.all(arr == 0)


def test_uniform_range():
    arr = fill(np.empty((200, 50), np.float32), filler(type="uniform", min=-0.3, max=0.7))
    assert arr.min() >= -0.3 and arr.max() <= 0.7
    assert abs(arr.mean() - 0.2) < 0.01


def test_gaussian_moments():
    arr = fill(np.empty((100, 100)), filler(type="gaussian", mean=1.5, std=0.5))
    assert abs(arr.mean() - 1.5) < 0.02 and abs(arr.std() - 0.5) < 0.02


@pytest.mark.parametrize("sparse", [0, 3, 10])
def test_gaussian_sparse_keeps_about_sparse_per_output(sparse):
    arr = fill(np.empty((10, 4000)), filler(type="gaussian", std=1.0, sparse=sparse))
    # p = sparse / num_outputs, num_outputs = shape[0]
    assert abs(np.mean(arr != 0) - sparse / 10) < 0.02


def test_gaussian_sparse_above_outputs_is_an_error():
    with pytest.raises(CaffeError, match="probability"):
        fill(np.empty((2, 5)), filler(type="gaussian", sparse=3))


def test_positive_unitball_rows_sum_to_one():
    arr = fill(np.empty((6, 2, 3, 3)), filler(type="positive_unitball"))
    assert np.all(arr >= 0)
    np.testing.assert_allclose(arr.reshape(6, -1).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("norm,expect", [(0, 3 * 2 * 2), (1, 16 * 2 * 2), (2, (12 + 64) / 2)])
def test_xavier_scale(norm, expect):
    arr = fill(np.empty((16, 3, 2, 2)), filler(type="xavier", variance_norm=norm))
    scale = np.sqrt(3.0 / expect)
    assert np.abs(arr).max() <= scale and np.abs(arr).max() > 0.9 * scale


@pytest.mark.parametrize("norm,expect", [(0, 50 * 3 * 3), (1, 64 * 3 * 3),
                                         (2, (450 + 576) / 2)])
def test_msra_std(norm, expect):
    arr = fill(np.empty((64, 50, 3, 3)), filler(type="msra", variance_norm=norm))
    assert abs(arr.std() / np.sqrt(2.0 / expect) - 1) < 0.03


def test_xavier_fans_for_a_matrix_and_a_vector():
    # fan_in = count / shape[0], fan_out = count / shape[1]; a 1-d blob has fan_out = count
    arr = fill(np.empty((1000, 4)), filler(type="xavier"))
    assert np.abs(arr).max() <= np.sqrt(3.0 / 4)
    arr = fill(np.empty((1000,)), filler(type="xavier", variance_norm=1))
    assert np.abs(arr).max() <= np.sqrt(3.0 / 1000)


def test_bilinear_kernel():
    arr = fill(np.empty((2, 1, 4, 4), np.float32), filler(type="bilinear"))
    k = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(arr[1, 0], np.outer(k, k), rtol=1e-6)
    # factor 3: kernel 2 * 3 - 3 % 2 = 5
    arr = fill(np.empty((1, 1, 5, 5)), filler(type="bilinear"))
    k = np.array([1, 2, 3, 2, 1]) / 3
    np.testing.assert_allclose(arr[0, 0], np.outer(k, k))


def test_bilinear_needs_square_4d():
    with pytest.raises(CaffeError, match="square"):
        fill(np.empty((1, 1, 3, 4)), filler(type="bilinear"))
    with pytest.raises(CaffeError, match="4-d"):
        fill(np.empty((3, 3)), filler(type="bilinear"))


def test_sparse_only_for_gaussian():
    with pytest.raises(CaffeError, match="sparsity"):
        fill(np.empty((3, 3)), filler(type="xavier", sparse=1))


def test_unknown_filler():
    with pytest.raises(CaffeError, match="Unknown filler name: orthogonal"):
        fill(np.empty((3, 3)), filler(type="orthogonal"))


def test_seeded_fills_repeat():
    common.set_random_seed(5)
    a = fill(np.empty((4, 4)), filler(type="gaussian"))
    common.set_random_seed(5)
    b = fill(np.empty((4, 4)), filler(type="gaussian"))
    np.testing.assert_array_equal(a, b)
