"""caffe-jacinto's sparse training (compress/jacinto_sparsity.py) on tiny solvers.

Nets: `ip` is x = [1, 1] -> InnerProduct -> EuclideanLoss against 0, so with N = 1 the
gradient of the weight is ip * x = ip and of the bias ip, and every update below can be
worked out by hand; `conv` is a 3x3 Convolution with 32 outputs over 2 channels (eligible
for TI's channel-wise thresholding: no = 32, kernel 3x3) whose weights are set by hand.
"""
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.compress.jacinto_sparsity import (DisplaySparsity, G1Sparsity, SparseUpdate,
                                                  pack_mask, unpack_mask)
from caffe_lite.log_parse import parse_sparsity
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver

F = np.float32
EPS = float(np.finfo(F).eps)
# Each expected value below is a chain of at most 8 float32 operations on numbers of
# magnitude <= 1, each rounding by at most eps / 2.
TOL = 8 * EPS
ROOT = Path(__file__).resolve().parent.parent


def ip_net(bias=None, outputs=1):
    bias_text = "bias_term: false" if bias is None else \
        f'bias_filler {{ type: "constant" value: {bias} }}'
    return f'''name: "ip"
layer {{ name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param {{ shape {{ dim: 1 dim: 2 }} shape {{ dim: 1 dim: {outputs} }}
    data_filler {{ type: "constant" value: 1 }} data_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param {{ num_output: {outputs} {bias_text}
    weight_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }}
'''


def conv1x1_net():
    """The ip net as a 1x1 Convolution: the same arithmetic, for the Convolution-only G2/G3."""
    return '''name: "conv1x1"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 1 dim: 2 dim: 1 dim: 1 } shape { dim: 1 dim: 1 dim: 1 dim: 1 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
  convolution_param { num_output: 1 kernel_size: 1 bias_term: false
    weight_filler { type: "constant" value: 0 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "y" top: "loss" }
'''


def conv_net(head="relu"):
    """conv (32 x 2 x 3 x 3) on a 3x3 input, then ReLU -> InnerProduct -> SoftmaxWithLoss, or
    (head="softmax") a 1x1 conv2 straight into SoftmaxWithLoss."""
    rest = '''layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }
''' if head == "relu" else '''layer { name: "conv2" type: "Convolution" bottom: "conv" top: "conv2"
  convolution_param { num_output: 2 kernel_size: 1 bias_term: false
    weight_filler { type: "constant" value: 0 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv2" bottom: "y" top: "loss" }
'''
    return '''name: "conv"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } shape { dim: 1 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
  convolution_param { num_output: 32 kernel_size: 3 bias_term: false
    weight_filler { type: "constant" value: 0 } } }
''' + rest


def conv_weights():
    """Each output channel: one 1.0 and 17 magnitudes 0.01 ... 0.17 of alternating sign,
    all below TI's cap 0.2 * max, shuffled differently per channel."""
    rng = np.random.default_rng(3)
    base = np.concatenate([[1.0], 0.01 * np.arange(1, 18) * (-1) ** np.arange(17)])
    return np.stack([rng.permutation(base) for _ in range(32)]).astype(F).reshape(32, 2, 3, 3)


def zeros_per_channel(w):
    return sorted(set((w.reshape(w.shape[0], -1) == 0).sum(axis=1).tolist()))


def write_solver(tmp_path, net_text, extra, lr=0.1, momentum=0.0):
    (tmp_path / "net.prototxt").write_text(net_text)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: {lr} momentum: {momentum} '
                    f'lr_policy: "fixed" max_iter: 10 display: 0 snapshot_after_train: false '
                    f'random_seed: 1 {extra}')
    return str(path)


def solver_with(tmp_path, net_text, extra, weights, **kw):
    """A solver whose first layer's params hold `weights` (a list of arrays)."""
    solver = get_solver(write_solver(tmp_path, net_text, extra, **kw))
    layer = next(iter(solver.net.params))
    for blob, value in zip(solver.net.params[layer], weights):
        blob.data[...] = np.reshape(value, blob.shape)
    return solver


def hook_of(solver, kind):
    found = [h for h in solver.hooks if isinstance(h, kind)]
    assert len(found) == 1
    return found[0]


# --- which hooks for which fields -----------------------------------------------------------

@pytest.mark.parametrize("extra, kinds", [
    ("", []),
    ("threshold_weights: true", [G1Sparsity]),
    ("sparsity_threshold: 0.01", [G1Sparsity]),
    ("weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE", [G1Sparsity]),
    ("sparse_mode: SPARSE_UPDATE sparsity_target: 0.8", [SparseUpdate]),
    ("sparse_mode: SPARSE_NONE sparsity_target: 0.8", []),
    ("display_sparsity: 100", [DisplaySparsity]),
    ("sparse_mode: SPARSE_UPDATE display_sparsity: 100", [SparseUpdate, DisplaySparsity]),
])
def test_factory_picks_hooks_by_the_fields_set(tmp_path, extra, kinds):
    solver = get_solver(write_solver(tmp_path, ip_net(), extra))
    ours = (G1Sparsity, SparseUpdate, DisplaySparsity)
    assert [type(h) for h in solver.hooks if isinstance(h, ours)] == kinds


# --- G1 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, w_after, switched, w_history", [
    # sparsity_target 0.5: after iteration 1 the weight is half zeros, the bias all zeros:
    # both lr_mults drop to 0, so iteration 2 changes nothing
    ("sparsity_target: 0.5", [0.465, 0], {"ip[0]", "ip[1]"}, [0, 0]),
    # unset: G1's default 1.0, reached by the bias alone; the weight keeps learning
    ("", [0.4185, 0], {"ip[1]"}, [0.0465, 0.0465]),
])
def test_g1_threshold_weights_and_lr_drop(tmp_path, target, w_after, switched, w_history):
    # w = [0.5, -0.25], b = 0.1, lr 0.1, threshold 0.3, sparsity_lr_mult 0.
    # it 1: ip = 0.35; w = [0.465, -0.285] -> [0.465, 0]; b = 0.065 -> 0.
    # it 2 (weight not switched): ip = 0.465; w = [0.4185, -0.0465] -> [0.4185, 0].
    solver = solver_with(tmp_path, ip_net(bias=0.1),
                         f"threshold_weights: true sparsity_threshold: 0.3 "
                         f"sparsity_lr_mult: 0 {target}", [[[0.5, -0.25]]])
    solver.step(2)
    w, b = solver.net.params["ip"]
    np.testing.assert_allclose(w.data.ravel(), w_after, rtol=0, atol=TOL)
    assert w.data[0, 1] == 0 and b.data[0] == 0
    assert hook_of(solver, G1Sparsity).switched == switched
    np.testing.assert_allclose(solver.history[0].ravel(), w_history, rtol=0, atol=TOL)
    assert solver.history[1][0] == 0                   # the bias's lr_mult is 0 at it 2


def g1_frozen_solver(tmp_path, extra=""):
    prefix = tmp_path / "snap"
    return write_solver(tmp_path, ip_net(bias=0.1),
                        f'weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE sparsity_threshold: 0 '
                        f'snapshot: 2 snapshot_prefix: "{prefix}" {extra}', momentum=0.9)


def test_g1_frozen_zero_stays_through_momentum_and_resume(tmp_path):
    path = g1_frozen_solver(tmp_path)
    straight = get_solver(path)
    straight.net.params["ip"][0].data[...] = [[0.5, 0]]
    straight.step(4)
    w = straight.net.params["ip"][0].data
    # the update is masked, the momentum history is not (TI's Blob::Update)
    assert w[0, 1] == 0 and straight.history[0][0, 1] != 0 and w[0, 0] != 0.5

    resumed = get_solver(path)
    resumed.restore(str(tmp_path / "snap_iter_2.solverstate"))
    resumed.step(2)
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, w)
    np.testing.assert_array_equal(resumed.net.params["ip"][1].data,
                                  straight.net.params["ip"][1].data)
    for a, b in zip(resumed.history, straight.history):
        np.testing.assert_array_equal(a, b)


def test_g1_masks_come_back_from_the_snapshot_not_the_weights(tmp_path):
    # threshold 0.3, w = [0.5, 0.35]: both trainable at the start. it 1: ip = 0.85,
    # w = [0.415, 0.265]: the second is now under the threshold yet still trainable (TI's
    # mask was built once, at the start). it 2: ip = 0.68, w = [0.347, 0.197].
    # A mask rebuilt from the snapshot's weights would freeze 0.265; the kept one does not.
    path = write_solver(tmp_path, ip_net(), f'weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE '
                        f'sparsity_threshold: 0.3 snapshot: 1 '
                        f'snapshot_prefix: "{tmp_path / "snap"}"')
    straight = get_solver(path)
    straight.net.params["ip"][0].data[...] = [[0.5, 0.35]]
    straight.step(2)
    w = straight.net.params["ip"][0].data
    np.testing.assert_allclose(w, [[0.347, 0.197]], rtol=0, atol=TOL)

    resumed = get_solver(path)
    resumed.restore(str(tmp_path / "snap_iter_1.solverstate"))
    resumed.step(1)
    assert hook_of(resumed, G1Sparsity).frozen[0].tolist() == [[False, False]]
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, w)


def test_mask_packing_round_trips():
    mask = np.random.default_rng(0).random((3, 5, 7)) < 0.3
    np.testing.assert_array_equal(unpack_mask(pack_mask(mask), mask.shape), mask)


# --- L1 alone and with the sparsity hooks -----------------------------------------------------

# w = [0.5, 0], lr 0.1, weight_decay 0.1, L1 (sign(0) = 0):
# it 1: ip = 0.5, diff = [0.5 + 0.1, 0.5 + 0] -> w = [0.44, -0.05]
# it 2: ip = 0.39, diff = [0.39 + 0.1, 0.39 - 0.1] -> w = [0.391, -0.079]
# frozen second weight: it 2: ip = 0.44, diff = [0.54, masked] -> w = [0.386, 0]
L1 = 'regularization_type: "L1" weight_decay: 0.1 '


@pytest.mark.parametrize("net, extra, expected", [
    pytest.param(ip_net(), "", [0.391, -0.079], id="ip-L1"),
    pytest.param(ip_net(), "weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE", [0.386, 0],
                 id="ip-L1-G1"),
    pytest.param(conv1x1_net(), "", [0.391, -0.079], id="conv-L1"),
    pytest.param(conv1x1_net(), "sparse_mode: SPARSE_UPDATE", [0.386, 0], id="conv-L1-G2"),
])
def test_l1_alone_and_with_sparsity_hooks(tmp_path, net, extra, expected):
    solver = solver_with(tmp_path, net, L1 + extra, [np.array([0.5, 0], F)])
    solver.step(2)
    got = next(iter(solver.net.params.values()))[0].data.ravel()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert got[1] == 0 or not extra


# --- G2 / G3 -------------------------------------------------------------------------------

def test_g2_sparse_update_keeps_zeros_through_training(tmp_path):
    w0 = conv_weights()
    w0[:, 0] = 0                                       # half of every channel zero
    solver = solver_with(tmp_path, conv_net(), "sparse_mode: SPARSE_UPDATE", [w0],
                         lr=0.5, momentum=0.9)
    solver.step(3)
    w = solver.net.params["conv"][0].data
    assert (w[:, 0] == 0).all()
    assert not np.array_equal(w[:, 1], w0[:, 1])       # the rest trained
    assert zeros_per_channel(w) == [9]


def g3(**fields):
    """The G3 fields of these tests: target 0.5, a pass due every 2 iterations, factor
    0.5 then + 0.1 per pass; `fields` override them."""
    values = {"sparsity_target": 0.5, "sparsity_step_iter": 2, "sparsity_start_factor": 0.5,
              "sparsity_step_factor": 0.1}
    values.update(fields)
    return "sparse_mode: SPARSE_UPDATE " + " ".join(f"{k}: {v}" for k, v in values.items())


def g3_solver(tmp_path, extra="", net=None, **fields):
    return solver_with(tmp_path, net or conv_net(), g3(**fields) + " " + extra,
                       [conv_weights()], lr=0)


def test_g3_schedule_steps_the_factor_until_its_cap(tmp_path, caplog):
    # ni = 2 < 32, so each pass uses the low fraction, factor / 2, per channel of 18:
    # seen 2: factor 0.5 -> at most 0.25 * 18 = 4.5: 4 zeros; factor 0.6
    # seen 4: measured 4/18 < 0.5, factor 0.6 <= min(0.65, 0.95) -> 0.3 * 18 = 5.4: 5 zeros
    # seen 6: factor 0.7 > 0.65: no pass
    caplog.set_level(logging.INFO, logger="caffe_lite")
    solver = g3_solver(tmp_path)
    hook = hook_of(solver, SparseUpdate)
    solver.step(1)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [0]
    solver.step(1)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [4]
    assert hook.factor == F(0.5) + F(0.1)
    solver.step(4)
    w = solver.net.params["conv"][0].data
    assert zeros_per_channel(w) == [5] and hook.factor == F(0.5) + F(0.1) + F(0.1)
    # the 5 smallest magnitudes of each channel went
    assert (np.sort(np.abs(w.reshape(32, -1)), axis=1)[:, 5] == F(0.06)).all()
    passes = [r.getMessage() for r in caplog.records if "Finding and applying" in r.getMessage()]
    assert passes == [
        ("Finding and applying sparsity: sparsity_target=0.5 sparsity_factor=0.5 "
         "sparsity_achieved=0 iter=2"),
        ("Finding and applying sparsity: sparsity_target=0.5 sparsity_factor=0.6 "
         "sparsity_achieved=0.222222 iter=4")]


def test_g3_iteration_increment_after_applying(tmp_path):
    # sparsity_itr_increment_bfr_applying: false -> the gate sees it, not it + 1: passes at
    # it 0 (factor 0.5) and 2 (factor 0.6)
    solver = g3_solver(tmp_path, sparsity_itr_increment_bfr_applying="false")
    solver.step(1)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [4]
    solver.step(2)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [5]


def test_g3_stops_once_the_measured_sparsity_reaches_the_target(tmp_path, caplog):
    # target 0.1 (factor cap 0.25), factor 0.22 + 0.01 per pass, low fraction factor / 2:
    # seen 2: 0.11 * 18 = 1.98: 1 zero (measured 1/18); seen 4: 0.115 * 18 = 2.07: 2 zeros
    # (measured 2/18 >= 0.1); seen 6 and 8: no pass, though the factor 0.24 is under its cap
    caplog.set_level(logging.INFO, logger="caffe_lite")
    solver = g3_solver(tmp_path, sparsity_target=0.1, sparsity_start_factor=0.22,
                       sparsity_step_factor=0.01)
    solver.step(8)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [2]
    assert caplog.text.count("Finding and applying sparsity") == 2
    assert hook_of(solver, SparseUpdate).factor == F(F(0.22) + F(0.01)) + F(0.01)


def test_g3_never_passes_with_a_start_factor_above_the_cap(tmp_path):
    # start factor 0.5 > min(0.2 + 0.15, 0.95)
    solver = g3_solver(tmp_path, sparsity_target=0.2)
    solver.step(4)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [0]


def test_g3_start_iter(tmp_path):
    solver = g3_solver(tmp_path, sparsity_start_iter=3)
    solver.step(3)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [0]
    solver.step(1)
    assert zeros_per_channel(solver.net.params["conv"][0].data) == [4]


def test_g3_measured_sparsity_skips_a_conv_feeding_softmax(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caffe_lite")
    solver = g3_solver(tmp_path, net=conv_net(head="softmax"))
    solver.net.params["conv2"][0].data[...] = 0        # all zeros, but not measured
    solver.step(2)
    hook = hook_of(solver, SparseUpdate)
    assert [(p.layer.name, m) for p, m in hook.convs] == [("conv", True), ("conv2", False)]
    assert "sparsity_achieved=0 iter=2" in caplog.text
    assert hook.measured_sparsity() == F(128) / F(576)


def test_g3_factor_and_masks_survive_resume(tmp_path):
    # TI restarts sparsity_factor at sparsity_start_factor on resume (the pass at 4 would
    # use 0.5 again and leave 4 zeros); the snapshot keeps it here
    extra = f'snapshot: 2 snapshot_prefix: "{tmp_path / "snap"}"'
    straight = g3_solver(tmp_path, extra)
    straight.step(4)
    assert zeros_per_channel(straight.net.params["conv"][0].data) == [5]
    resumed = get_solver(str(tmp_path / "solver.prototxt"))
    resumed.restore(str(tmp_path / "snap_iter_2.solverstate"))
    resumed.step(2)
    np.testing.assert_array_equal(resumed.net.params["conv"][0].data,
                                  straight.net.params["conv"][0].data)
    assert hook_of(resumed, SparseUpdate).factor == hook_of(straight, SparseUpdate).factor


def test_g3_needs_a_step_iter(tmp_path):
    from caffe_lite.errors import CaffeError
    with pytest.raises(CaffeError, match="sparsity_step_iter must be > 0"):
        get_solver(write_solver(tmp_path, ip_net(), g3(sparsity_step_iter=0)))


# --- display_sparsity --------------------------------------------------------------------------

def test_display_sparsity_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caffe_lite")
    solver = solver_with(tmp_path, ip_net(outputs=3), "display_sparsity: 2",
                         [[[0.5, 0], [0, 0], [0.25, -0.5]]], lr=0)
    solver.step(4)
    lines = [r.getMessage() for r in caplog.records if r.filename == "jacinto_sparsity.py"]
    block = ["    Sparsity #0: ip = 0.5 (3/6)", "    Total sparsity = 0.5 (3/6)"]
    assert lines == ["Iteration 2, sparsity (fraction of zero weights):"] + block + \
        ["Iteration 4, sparsity (fraction of zero weights):"] + block
    assert parse_sparsity(lines) == [{"NumIters": 2.0, "ip": 0.5, "total": 0.5},
                                     {"NumIters": 4.0, "ip": 0.5, "total": 0.5}]


def test_train_and_plot_sparsity_as_a_user_does(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "net.prototxt").write_text(conv_net())
    model = Net(str(tmp_path / "net.prototxt"), phase=caffe_pb2.TRAIN)
    model.params["conv"][0].data[...] = conv_weights()
    model.save(str(tmp_path / "start.caffemodel"))
    solver = write_solver(tmp_path, conv_net(), g3() + " display_sparsity: 2", lr=0)
    solver_text = Path(solver).read_text().replace("display: 0", "display: 1")
    Path(solver).write_text(solver_text)
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "train", "-solver", solver,
                          "-weights", str(tmp_path / "start.caffemodel")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    log = tmp_path / "train.log"
    log.write_text(run.stderr)
    # seen 2: 4 of 18 per channel (128/576), seen 4: 5 of 18 (160/576); ip has no zeros
    assert "    Sparsity #0: conv = 0.222222 (128/576)" in run.stderr
    assert "    Total sparsity = 0.25 (160/640)" in run.stderr
    rows = parse_sparsity(str(log))
    assert [r["NumIters"] for r in rows] == [2, 4, 6, 8, 10]
    assert [r["conv"] for r in rows][:2] == [0.222222, 0.277778] and rows[0]["ip"] == 0

    plot = subprocess.run([sys.executable, "-m", "caffe_lite", "plot", str(log), "-o",
                           str(tmp_path / "curves.png"), "-csv", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (tmp_path / "train.log.sparsity").read_text().splitlines()
    assert csv_lines[0] == "NumIters,conv,ip,total"
    assert csv_lines[1] == "2.0,0.222222,0.0,0.2"
