"""SSL training (compress/ssl_training.py) against the fork's own binary and on tiny solvers.

Golden: tests/data/golden_forks/ssl_block_lasso and ssl_connectivity, written by scnn's
`caffe train -solver solver.prototxt -weights init.caffemodel` (3 iterations, a snapshot
after each). We run the same solver and compare conv1 / ip1 after iterations 1, 2, 3, the
exact zero patterns, the frozen sets, the losses, and the fork's sparsity and
regularization-term log lines.
"""
import logging
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.compress import group_lasso as gl
from caffe_lite.compress.ssl_training import SSLTraining
from caffe_lite.errors import CaffeError
from caffe_lite.io.binary import write_binary
from caffe_lite.io.blobs import array_to_blob_proto
from caffe_lite.io.prototxt import read_solver_param
from caffe_lite.solvers import get_solver

F = np.float32
EPS = float(np.finfo(F).eps)
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_forks"
CASES = ["ssl_block_lasso", "ssl_connectivity"]
# The longest float32 reduction of an iteration is ip1's, over its 216 inputs; each weight
# after k iterations is its start plus k updates, each off by at most that many roundings
# of the largest weight's size.
REDUCTION = 216


@pytest.fixture
def info_log(caffe_log_records):
    """The caffe_lite logger's INFO messages while the test runs."""
    return caffe_log_records(logging.INFO)


def golden_solver(case, prefix, monkeypatch, snapshot=0):
    """The case's solver as `caffe train -weights init.caffemodel` builds it, run from the
    case folder (its HDF5 list is relative), snapshots under `prefix`."""
    monkeypatch.chdir(GOLDEN / case)
    param = read_solver_param("solver.prototxt")
    param.snapshot_prefix = str(prefix)
    param.snapshot = snapshot
    return get_solver(param, path="solver.prototxt")


def ssl_hook(solver):
    (hook,) = [h for h in solver.hooks if isinstance(h, SSLTraining)]
    return hook


def params(solver):
    return {f"{layer}_{b}": solver.net.params[layer][i].data
            for layer in ("conv1", "ip1") for i, b in enumerate("wb")}


def printed_tol(value):
    """Half a unit in the 6th significant digit: what `ostream << float` rounded away."""
    return 0.5 * 10.0 ** (np.floor(np.log10(abs(value))) - 5)


def fork_log(case):
    """From the fork's train.log, per iteration: the train net's loss, the sparsity lines
    (header and values joined by a space) and the regularization-term line.

    The loss is the "Train net output" one: results.npz's log_loss is the smoothed loss,
    which Caffe updates by adding the difference of two float32 losses, so that it loses
    digits once the loss falls (0.00014838 for 0.000148436)."""
    lines = (GOLDEN / case / "train.log").read_text().splitlines()
    losses, reports, terms = [], [], []
    for i, line in enumerate(lines):
        text = line.split("] ", 1)[-1]
        if "Train net output #0: loss = " in text:
            losses.append(float(text.split(" = ")[1].split()[0]))
        elif text.endswith("Sparsity %: "):
            if "Element" in text:
                reports.append([])
            reports[-1].append(text + lines[i + 1])
        elif "Total regularization terms:" in text:
            terms.append(text.split(" loss+regular.")[0])
    return losses, reports, terms


@pytest.mark.parametrize("case", CASES)
def test_three_iterations_match_the_fork(case, tmp_path, monkeypatch, info_log):
    golden = np.load(GOLDEN / case / "results.npz")
    losses, reports, terms = fork_log(case)
    solver = golden_solver(case, tmp_path / "run", monkeypatch)
    solver.load_weights("init.caffemodel")
    for k in (1, 2, 3):
        solver.step(1)
        loss = float(solver.net.blobs["loss"].data)
        want_loss = losses[k - 1]
        assert abs(loss - want_loss) <= printed_tol(want_loss) + REDUCTION * EPS * loss
        for key, got in params(solver).items():
            want = golden[f"{key}_it{k}"]
            tol = k * REDUCTION * EPS * np.abs(want).max()
            assert np.abs(got - want).max() <= tol, (k, key, np.abs(got - want).max(), tol)
            np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"{key} it{k}")
    ours = [m for m in info_log() if "Sparsity %:" in m or "regularization terms" in m]
    assert ours == [line for report, term in zip(reports, terms) for line in report + [term]]


def test_connectivity_freezes_what_the_fork_froze(tmp_path, monkeypatch):
    golden = np.load(GOLDEN / "ssl_connectivity" / "results.npz")
    solver = golden_solver("ssl_connectivity", tmp_path / "run", monkeypatch)
    solver.load_weights("init.caffemodel")
    solver.step(3)
    hook = ssl_hook(solver)
    frozen = {p.layer.name: hook.frozen[p.index] for p in solver.params if p.index in hook.frozen}
    assert sorted(frozen) == ["conv1", "ip1"]
    # conv1 (ELTWISE) froze every zero after WeightAlign, tiny ones included; ip1 (GRPWISE)
    # only its all-zero rows and columns, so its other zeros moved
    np.testing.assert_array_equal(golden["conv1_w_zero_init"], frozen["conv1"])
    np.testing.assert_array_equal(golden["conv1_w_zero_all_iters"], frozen["conv1"])
    np.testing.assert_array_equal(golden["ip1_w_zero_all_iters"], frozen["ip1"])
    assert np.count_nonzero(golden["ip1_w_zero_init"] & ~frozen["ip1"]) > 0


def test_resume_keeps_the_frozen_sets_and_equals_the_straight_run(tmp_path, monkeypatch):
    straight = golden_solver("ssl_connectivity", tmp_path / "a" / "run", monkeypatch)
    (tmp_path / "a").mkdir()
    straight.load_weights("init.caffemodel")
    straight.step(2)
    hook = ssl_hook(straight)
    conv1 = straight.net.params["conv1"][0].data
    # a trainable weight that is 0 at the snapshot (as after a hard zeroing): the fork would
    # freeze it when it rebuilds the mask from the snapshot's weights; the straight run not
    (index,) = [p.index for p in straight.params if p.layer.name == "conv1" and p.blob_index == 0]
    k = np.flatnonzero(~hook.frozen[index])[0]
    conv1.flat[k] = 0
    state = straight.snapshot()
    straight.step(1)
    assert conv1.flat[k] != 0

    (tmp_path / "b").mkdir()
    resumed = golden_solver("ssl_connectivity", tmp_path / "b" / "run", monkeypatch)
    resumed.restore(state)
    assert resumed.iter == 2
    resumed.step(1)
    for i in hook.frozen:
        np.testing.assert_array_equal(ssl_hook(resumed).frozen[i], hook.frozen[i])
    for key, got in params(resumed).items():
        np.testing.assert_array_equal(got, params(straight)[key], err_msg=key)


# --- tiny solvers -----------------------------------------------------------------------------

IP_NET = """name: "ip"
layer {{ name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param {{ shape {{ dim: 1 dim: 2 }} shape {{ dim: 1 dim: 2 }}
    data_filler {{ type: "constant" value: 1 }} data_filler {{ type: "constant" value: 0.25 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip" {layer}
  inner_product_param {{ num_output: 2
    weight_filler {{ type: "constant" value: {w} }} bias_filler {{ type: "constant" value: {b} }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }}
"""

CONV_NET = """name: "conv"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } shape { dim: 1 dim: 4 dim: 1 dim: 1 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 0 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
  param { breadth_decay_mult: 1 kernel_shape_decay_mult: 2 } param { }
  convolution_param { num_output: 4 kernel_size: 3 group: 2
    weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "y" top: "loss" }
"""


def tiny_solver(tmp_path, net, extra=""):
    (tmp_path / "net.prototxt").write_text(net)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" '
                    f'max_iter: 10 display: 0 snapshot_after_train: false random_seed: 5 '
                    f'{extra}')
    return get_solver(str(path))


def gradients(solver):
    """The data gradients of the next step (the nets here are deterministic)."""
    solver.net.clear_param_diffs()
    solver.net.forward_backward()
    return [b.diff.copy() for b in solver.net.learnable_params]


def write_decay(tmp_path, values):
    path = tmp_path / "decay.binaryproto"
    write_binary(str(path), array_to_blob_proto(np.asarray(values, F)))
    return str(path)


@pytest.mark.parametrize("kind", ["L2", "L1"])
def test_decay_proto_multiplies_the_weight_decay_element_wise(tmp_path, kind):
    m = np.array([[0, 1], [2, 0.5]], F)
    spec = f'param {{ decay_proto: "{write_decay(tmp_path, m)}" regularization_type: "{kind}" }}'
    solver = tiny_solver(tmp_path, IP_NET.format(layer=spec, w=0.3, b=-0.2), "weight_decay: 0.5")
    w, b = (blob.data for blob in solver.net.learnable_params)
    w0, b0 = w.copy(), b.copy()
    gw, gb = gradients(solver)
    solver.step(1)
    decayed = w0 * m if kind == "L2" else np.sign(w0) * m
    np.testing.assert_array_equal(w, w0 - F(0.1) * (gw + F(0.5) * decayed))
    np.testing.assert_array_equal(b, b0 - F(0.1) * (gb + F(0.5) * b0))   # plain L2
    # the hook took the weight's decay over from the solver; the bias keeps its own
    assert solver.net.params_weight_decay == [0.0, 1.0]


def test_decay_proto_missing_or_of_another_count_is_one_line(tmp_path):
    spec = 'param { decay_proto: "nowhere.binaryproto" }'
    solver = tiny_solver(tmp_path, IP_NET.format(layer=spec, w=0.3, b=0), "weight_decay: 0.5")
    with pytest.raises(CaffeError, match=r"^layer 'ip' param 0: decay_proto file "
                                         r"'nowhere.binaryproto' does not exist$"):
        solver.step(1)
    path = write_decay(tmp_path, [1, 2, 3])
    solver = tiny_solver(tmp_path, IP_NET.format(layer=f'param {{ decay_proto: "{path}" }}',
                                                 w=0.3, b=0), "weight_decay: 0.5")
    with pytest.raises(CaffeError, match=r"^layer 'ip' param 0: decay_proto '.*' holds 3 "
                                         r"values, the param has 4 \(shape 2 2\)$"):
        solver.step(1)


def test_breadth_and_kernel_shape_lasso_run_on_cpu_within_conv_groups(tmp_path):
    solver = tiny_solver(tmp_path, CONV_NET, "breadth_decay: 0.01 kernel_shape_decay: 0.02")
    w = solver.net.learnable_params[0].data
    w0 = w.copy()
    gw, _ = gradients(solver)
    solver.step(1)
    expected = gw + gl.kernel_shape_lasso(w0, 2, F(0.02) * F(2))[0]
    expected += gl.breadth_lasso(w0, F(0.01) * F(1))[0]
    np.testing.assert_array_equal(w, gl.zero_out(w0 - F(0.1) * expected))


def test_blocks_that_do_not_tile_fail_before_the_first_iteration(tmp_path):
    spec = "param { block_group_lasso { xdimen: 3 ydimen: 1 } }"
    solver = tiny_solver(tmp_path, IP_NET.format(layer=spec, w=0.3, b=0),
                         "block_group_decay: 0.01")
    with pytest.raises(CaffeError, match=r"^layer 'ip' param 0: block_group_lasso ydimen 1 x "
                                         r"xdimen 3 does not tile its 2x2 weight matrix"):
        solver.step(1)
    assert solver.iter == 0


def test_plain_runs_get_no_hook_and_keep_tiny_weights(tmp_path):
    solver = tiny_solver(tmp_path, IP_NET.format(layer="", w=5e-5, b=5e-5), "weight_decay: 0.5")
    assert not [h for h in solver.hooks if isinstance(h, SSLTraining)]
    solver.param.base_lr = 0
    solver.step(1)
    for blob in solver.net.learnable_params:
        np.testing.assert_array_equal(blob.data, F(5e-5))


def test_a_net_only_ssl_field_zeroes_tiny_params_biases_included(tmp_path):
    layer = "connectivity_mode: DISCONNECTED_GRPWISE"
    solver = tiny_solver(tmp_path, IP_NET.format(layer=layer, w=5e-5, b=5e-5))
    hook = ssl_hook(solver)
    solver.param.base_lr = 0
    solver.step(1)
    assert hook.active
    for blob in solver.net.learnable_params:
        np.testing.assert_array_equal(blob.data, 0)
    # every weight was in an all-zero row after WeightAlign: frozen
    assert hook.frozen[0].all()
