"""Parity with BVLC Caffe on whole nets: the golden cases in tests/data/golden (copied from
../shared/golden; see its README).

TRAIN: net_train.prototxt, parameters from `train/param/<layer>/<i>`, inputs from
`input/<blob>`, forward, backward; every blob's data and diff, every parameter gradient and
the parameters the forward changed (BatchNorm statistics) must match. TEST: net.prototxt
with weights_after.caffemodel on the same inputs. Tolerance: 1e-4 relative, 1e-5 absolute.
"""
from pathlib import Path

import numpy as np
import pytest

import caffe_lite as caffe
from caffe_lite.net import Net

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
CASES = ["layers_a", "layers_b", "lenet"]
RTOL, ATOL = 1e-4, 1e-5


def load(case):
    z = np.load(GOLDEN / case / "golden.npz")
    return {k: z[k] for k in z.files}


def keys(golden, prefix):
    return {k[len(prefix):]: v for k, v in golden.items() if k.startswith(prefix)}


def set_inputs(net, golden):
    for name, value in keys(golden, "input/").items():
        net.blobs[name].data[...] = value


def compare(failures, what, actual, expected):
    actual = np.asarray(actual)
    if actual.shape != expected.shape and actual.size == expected.size:
        actual = actual.reshape(expected.shape)
    if actual.shape != expected.shape:
        failures.append(f"{what}: shape {actual.shape}, golden {expected.shape}")
        return
    err = np.abs(actual.astype(np.float64) - expected)
    bad = err > ATOL + RTOL * np.abs(expected)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape) if err.ndim else ()
        failures.append(f"{what}: {int(bad.sum())}/{bad.size} off, worst at {i}: "
                        f"{actual[i]!r} vs golden {expected[i]!r}")


def report(failures):
    assert not failures, f"{len(failures)} mismatches:\n  " + "\n  ".join(failures)


@pytest.mark.parametrize("case", CASES)
def test_golden_structure_and_init_weights(case):
    """The net Caffe built: same blobs (split names included), same parameter shapes, and
    Caffe's own weights_init.caffemodel loads."""
    golden = load(case)
    net = Net(str(GOLDEN / case / "net_train.prototxt"), caffe.TRAIN)
    assert sorted(net.blobs) == sorted(keys(golden, "train/blob/"))
    params = keys(golden, "train/param/")
    assert {k.split("/")[0] for k in params} == set(net.params)
    for key, value in params.items():
        layer, i = key.rsplit("/", 1)
        assert net.params[layer][int(i)].shape == value.shape, key
    net.copy_from(str(GOLDEN / case / "weights_init.caffemodel"))


@pytest.mark.parametrize("case", CASES)
def test_golden_train_forward_backward(case):
    golden = load(case)
    net = Net(str(GOLDEN / case / "net_train.prototxt"), caffe.TRAIN)
    for key, value in keys(golden, "train/param/").items():
        layer, i = key.rsplit("/", 1)
        net.params[layer][int(i)].data[...] = value
    set_inputs(net, golden)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    failures = []
    for name, value in keys(golden, "train/blob/").items():
        compare(failures, f"blob {name}", net.blobs[name].data, value)
    for name, value in keys(golden, "train/diff/").items():
        compare(failures, f"diff {name}", net.blobs[name].diff, value)
    for key, value in keys(golden, "train/pdiff/").items():
        layer, i = key.rsplit("/", 1)
        compare(failures, f"param diff {key}", net.params[layer][int(i)].diff, value)
    for key, value in keys(golden, "train/after/").items():
        layer, i = key.rsplit("/", 1)
        compare(failures, f"param after {key}", net.params[layer][int(i)].data, value)
    report(failures)


@pytest.mark.parametrize("case", CASES)
def test_golden_test_phase_forward(case):
    golden = load(case)
    net = Net(str(GOLDEN / case / "net.prototxt"),
              str(GOLDEN / case / "weights_after.caffemodel"), caffe.TEST)
    set_inputs(net, golden)
    net.forward()
    failures = []
    expected = keys(golden, "test/blob/")
    assert sorted(net.blobs) == sorted(expected)
    for name, value in expected.items():
        compare(failures, f"blob {name}", net.blobs[name].data, value)
    report(failures)
