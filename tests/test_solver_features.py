"""Solver features beyond one update: iter_size, clip_gradients, exact resume, signals, and
snapshots that survive a kill."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.io.binary import read_net_binary, read_solver_state
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import SignalHandler, get_solver
from caffe_lite.solvers import snapshot as snapshot_mod


pytestmark = pytest.mark.usefixtures("restore_glog")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LMDB = HERE / "data" / "golden" / "data_lmdb" / "train_lmdb"

DUMMY_DATA = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.999 } } }
"""
LMDB_DATA = """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 6 mirror: true scale: 0.01 }
  data_param { source: "%s" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 6 scale: 0.01 }
  data_param { source: "%s" batch_size: 4 backend: LMDB } }
""" % (LMDB, LMDB)
INPUT_DATA = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %(n)d dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: %(n)d } } }
"""
LAYERS = """
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 4
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 3
momentum: 0.9
weight_decay: 0.0005
display: 1
max_iter: 8
snapshot_prefix: "%(prefix)s"
random_seed: 7
solver_mode: CPU
"""


def solver_text(base=SOLVER, **fields):
    """`base` with each field replaced (or appended; None removes it); strings need quotes."""
    lines = base.splitlines()
    for name, value in fields.items():
        lines = [ln for ln in lines if not ln.startswith(name + ":")]
        if value is not None:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"


def write_case(folder, data=DUMMY_DATA, extra="", solver=SOLVER, n=8, **fields):
    """net.prototxt + solver.prototxt in `folder`; returns the solver path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text('name: "tiny"\n' + (data % {"n": n}
                                          if "%(n)" in data else data) + LAYERS)
    text = solver_text(solver, **fields) % {"prefix": folder / "snap"} + extra
    (folder / "solver.prototxt").write_text(text)
    return folder / "solver.prototxt"


def params_of(net):
    return {f"{layer}/{i}": b.data.copy() for layer, blobs in net.params.items()
            for i, b in enumerate(blobs)}


# --- iter_size -------------------------------------------------------------------------------

def test_iter_size_equals_large_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8).astype(np.float32)
    big = get_solver(write_case(tmp_path / "big", INPUT_DATA, n=8, clip_gradients=10))
    small = get_solver(write_case(tmp_path / "small", INPUT_DATA, n=4, clip_gradients=10,
                                  iter_size=2))
    for name, blobs in big.net.params.items():
        for a, b in zip(blobs, small.net.params[name]):
            b.data[...] = a.data
    halves = iter([0, 1] * 10)
    fb = small.net.forward_backward

    def fed_forward_backward():
        h = next(halves)
        small.net.blobs["data"].data[...] = x[4 * h:4 * h + 4]
        small.net.blobs["label"].data[...] = y[4 * h:4 * h + 4]
        return fb()
    small.net.forward_backward = fed_forward_backward
    big.net.blobs["data"].data[...] = x
    big.net.blobs["label"].data[...] = y
    for _ in range(3):
        big.step(1)
        small.step(1)
        assert small.smoothed_loss == pytest.approx(big.smoothed_loss, rel=1e-5)
    for key, value in params_of(big.net).items():
        np.testing.assert_allclose(params_of(small.net)[key], value, rtol=1e-5, atol=1e-6)


# --- clip_gradients --------------------------------------------------------------------------

@pytest.mark.parametrize("clip,clipped", [(0.05, True), (1e6, False)])
def test_clip_gradients_scales_by_global_l2_norm(tmp_path, clip, clipped):
    solver = get_solver(write_case(tmp_path, INPUT_DATA, clip_gradients=clip, momentum=0,
                                   weight_decay=0))
    rng = np.random.default_rng(1)
    net = solver.net
    net.blobs["data"].data[...] = rng.normal(size=(8, 6))
    net.blobs["label"].data[...] = rng.integers(0, 4, 8)
    before = [b.data.copy() for b in net.learnable_params]
    net.clear_param_diffs()
    net.forward_backward()
    grads = [b.diff.astype(np.float64) for b in net.learnable_params]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    assert (norm > clip) == clipped   # each case takes the branch it is named for
    scale = min(1.0, clip / norm)
    solver.step(1)
    for b0, g, lr_mult, blob in zip(before, grads, net.params_lr, net.learnable_params):
        want = b0 - 0.1 * lr_mult * scale * g
        np.testing.assert_allclose(blob.data, want, rtol=1e-5, atol=1e-7)


# --- exact resume ----------------------------------------------------------------------------

RESUME_CASES = {
    "sgd-dummy": (DUMMY_DATA, {}),
    "adam-hdf5": (DUMMY_DATA, dict(type='"Adam"', snapshot_format="HDF5", base_lr=0.01)),
    "nesterov-lmdb": (LMDB_DATA, dict(type='"Nesterov"')),
    "adadelta-itersize": (DUMMY_DATA, dict(type='"AdaDelta"', iter_size=2, base_lr=1)),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_is_bit_identical(tmp_path, case):
    data, fields = RESUME_CASES[case]
    straight = get_solver(write_case(tmp_path / "straight", data, **fields))
    straight.step(7)
    want = params_of(straight.net)

    path = write_case(tmp_path / "split", data, **fields)
    first = get_solver(path)
    first.step(3)
    state_file = first.snapshot()
    assert os.path.exists(state_file + snapshot_mod.RNG_SUFFIX)
    first.step(2)  # moves on; the resumed run must not see this
    resumed = get_solver(path)
    resumed.restore(state_file)
    assert resumed.iter == 3
    resumed.step(4)
    got = params_of(resumed.net)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert len(resumed.history) == len(straight.history)
    for a, b in zip(straight.history, resumed.history):
        np.testing.assert_array_equal(a, b)


def test_restore_without_side_file_still_works(tmp_path):
    path = write_case(tmp_path, DUMMY_DATA)
    s = get_solver(path)
    s.step(2)
    state_file = s.snapshot()
    os.unlink(state_file + snapshot_mod.RNG_SUFFIX)
    t = get_solver(path)
    t.restore(state_file)
    assert t.iter == 2
    for key, value in params_of(s.net).items():
        np.testing.assert_array_equal(params_of(t.net)[key], value)


def test_solverstate_is_plain_caffe(tmp_path):
    # nothing caffe-lite specific inside the .solverstate: every field is BVLC's
    path = write_case(tmp_path, DUMMY_DATA)
    s = get_solver(path)
    s.step(1)
    state_file = s.snapshot()
    raw = Path(state_file).read_bytes()
    state = caffe_pb2.SolverState.FromString(raw)
    assert state.SerializeToString() == raw
    assert {f.name for f, _ in state.ListFields()} <= {"iter", "learned_net", "history",
                                                      "current_step"}


def test_restore_rejects_wrong_history_length(tmp_path):
    path = write_case(tmp_path / "a", DUMMY_DATA)
    s = get_solver(path)
    s.step(1)
    state_file = s.snapshot()
    adam = get_solver(write_case(tmp_path / "b", DUMMY_DATA, type='"Adam"'))
    with pytest.raises(CaffeError, match="Incorrect length of history blobs"):
        adam.restore(state_file)


# --- hooks -----------------------------------------------------------------------------------

def test_callbacks_and_update_mask(tmp_path):
    s = get_solver(write_case(tmp_path, DUMMY_DATA))
    calls = []
    s.add_callback(lambda: calls.append("start"), lambda: calls.append("grad"))

    class Hook:
        def after_update(self):
            calls.append("after")
    s.add_callback(Hook())
    w = s.net.params["ip1"][0]
    mask = np.ones(w.shape, np.float32)
    mask[0] = 0
    start = w.data.copy()
    s.set_update_mask(w, mask, history=True)
    s.step(2)
    assert calls == ["start", "grad", "after"] * 2
    np.testing.assert_array_equal(w.data[0], start[0])
    assert np.all(np.any(w.data[1:] != start[1:], axis=1))
    assert np.all(s.history[0][0] == 0)


def test_regularizer_registry(tmp_path):
    from caffe_lite.solvers import regularizers
    seen = []

    @regularizers.register_regularizer("TestHalfL2")
    def half_l2(data, diff, local_decay):
        seen.append(local_decay)
        diff += np.float32(local_decay / 2) * data
    try:
        s = get_solver(write_case(tmp_path, DUMMY_DATA, regularization_type='"TestHalfL2"'))
        s.step(1)
        # decay_mult 1 (ip1 weights), 0 (ip1 bias: skipped), 1 (ip2 default), 1
        assert len(seen) == 3
    finally:
        regularizers.REGULARIZERS.pop("TestHalfL2")


# --- signals ---------------------------------------------------------------------------------

def test_signal_handler_actions():
    h = SignalHandler("snapshot", "stop")
    before = signal.getsignal(signal.SIGINT)
    with h:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert h.get_action() == "snapshot"
        assert h.get_action() == "none"
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
        assert h.get_action() == "stop"
    assert signal.getsignal(signal.SIGINT) is before


def _train(folder, *flags):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(folder / "train.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "caffe_lite", "train", "-solver",
                             str(folder / "solver.prototxt"), *flags],
                            stderr=log, stdout=subprocess.DEVNULL, cwd=folder, env=env)
    return proc, log


def _wait_for(folder, text, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in (folder / "train.log").read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"'{text}' never appeared:\n" + (folder / "train.log").read_text())


LONG = solver_text(max_iter=100000000, test_iter=None, test_interval=None)


@pytest.mark.parametrize("effect", ["stop", "snapshot"])
def test_sigint_snapshots_and_exits_cleanly(tmp_path, effect):
    write_case(tmp_path, DUMMY_DATA, solver=LONG)
    proc, log = _train(tmp_path, "-sigint_effect", effect, "-sighup_effect", "stop")
    try:
        _wait_for(tmp_path, "Iteration 20,", proc)
        proc.send_signal(signal.SIGINT)
        if effect == "snapshot":
            _wait_for(tmp_path, "Snapshotting solver state", proc)
            assert proc.poll() is None  # still training
            proc.send_signal(signal.SIGHUP)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "train.log").read_text()
    assert rc == 0, text
    assert "Optimization stopped early." in text
    states = sorted(tmp_path.glob("snap_iter_*.solverstate"))
    assert states, text
    for state_file in states:
        s = get_solver(tmp_path / "solver.prototxt")
        s.restore(state_file)
        assert s.iter == int(state_file.stem.split("_")[-1])


def test_snapshot_failure_leaves_previous_snapshot(tmp_path, monkeypatch):
    path = write_case(tmp_path, DUMMY_DATA)
    s = get_solver(path)
    s.step(2)
    good = s.snapshot()
    good_bytes = Path(good).read_bytes()
    model = tmp_path / "snap_iter_2.caffemodel"
    model_bytes = model.read_bytes()

    real_fsync = os.fsync
    calls = {"n": 0}

    def dying_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # mid-snapshot: the side file is done, the model is half-way
            raise KeyboardInterrupt
        real_fsync(fd)

    s.net.params["ip1"][0].data[...] += 1  # a different model to (fail to) overwrite with
    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        s.snapshot()  # same iteration: would overwrite both files
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert Path(good).read_bytes() == good_bytes
    assert model.read_bytes() == model_bytes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    t = get_solver(path)
    t.restore(good)
    assert t.iter == 2

    s.step(1)
    calls["n"] = 0
    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        s.snapshot()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (tmp_path / "snap_iter_3.solverstate").exists()
    assert not (tmp_path / "snap_iter_3.caffemodel").exists()


def test_sigkill_during_snapshots_never_leaves_a_broken_file(tmp_path):
    big = LAYERS.replace("num_output: 5", "num_output: 3000")
    write_case(tmp_path, DUMMY_DATA, solver=LONG, snapshot=1)
    (tmp_path / "net.prototxt").write_text('name: "tiny"\n' + DUMMY_DATA + big)
    proc, log = _train(tmp_path)
    try:
        _wait_for(tmp_path, "Snapshotting solver state to binary proto file", proc)
        time.sleep(0.7)
        proc.kill()
        proc.wait(30)
    finally:
        log.close()
    states = sorted(tmp_path.glob("snap_iter_*.solverstate"))
    assert states
    for f in tmp_path.glob("snap_iter_*.caffemodel"):
        read_net_binary(f)
    for state_file in states:
        state = read_solver_state(state_file)
        assert Path(state.learned_net).exists()
        read_net_binary(state.learned_net)
    s = get_solver(tmp_path / "solver.prototxt")
    s.restore(states[-1])
    assert s.iter == int(states[-1].stem.split("_")[-1])


def _fed_solver(path, x, y):
    s = get_solver(path)
    s.net.blobs["data"].data[...] = x
    s.net.blobs["label"].data[...] = y
    return s


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_restore_round_trip(tmp_path, fmt):
    """A fresh solver restored from a snapshot holds the snapshot's params, history and
    iteration exactly, and its next step is bit for bit the original's."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8).astype(np.float32)
    path = write_case(tmp_path, INPUT_DATA, type='"Adam"', base_lr=0.01, snapshot_format=fmt,
                      test_iter=None, test_interval=None)
    original = _fed_solver(path, x, y)
    original.step(3)
    state_file = original.snapshot()
    fresh = _fed_solver(path, x, y)
    # the same random_seed gives the fresh solver the original's initial weights, not its
    # trained ones, and an all-zero history: the round trip has something to restore
    assert any(not np.array_equal(v, params_of(original.net)[k])
               for k, v in params_of(fresh.net).items())
    assert not any(h.any() for h in fresh.history)

    fresh.restore(state_file)
    assert fresh.iter == original.iter == 3
    _assert_same_state(fresh, original)
    original.step(1)
    fresh.step(1)
    assert fresh.iter == original.iter == 4
    assert fresh.smoothed_loss == original.smoothed_loss
    _assert_same_state(fresh, original)


def _assert_same_state(a, b):
    want = params_of(b.net)
    got = params_of(a.net)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert len(a.history) == len(b.history) == 2 * len(want)      # Adam: m and v
    for i, (h, g) in enumerate(zip(a.history, b.history)):
        np.testing.assert_array_equal(h, g, err_msg=f"history {i}")


# --- the train command: resume, finetune, stages ---------------------------------------------

def test_cli_resume_equals_straight_run(tmp_path, capsys):
    from caffe_lite import cli
    straight = write_case(tmp_path / "a", DUMMY_DATA, snapshot=4)
    assert cli.main(["train", "-solver", str(straight)]) == 0
    want = (tmp_path / "a" / "snap_iter_8.caffemodel").read_bytes()
    resumed = write_case(tmp_path / "b", DUMMY_DATA, snapshot=4, max_iter=4)
    assert cli.main(["train", "-solver", str(resumed)]) == 0
    write_case(tmp_path / "b", DUMMY_DATA, snapshot=4)
    assert cli.main(["train", "-solver", str(resumed), "-snapshot",
                     str(tmp_path / "b" / "snap_iter_4.solverstate")]) == 0
    err = capsys.readouterr().err
    assert "Resuming from" in err
    assert (tmp_path / "b" / "snap_iter_8.caffemodel").read_bytes() == want


def test_cli_finetune_from_weights(tmp_path, capsys):
    from caffe_lite import cli
    first = write_case(tmp_path / "a", DUMMY_DATA, max_iter=3)
    assert cli.main(["train", "-solver", str(first)]) == 0
    weights = tmp_path / "a" / "snap_iter_3.caffemodel"
    second = write_case(tmp_path / "b", DUMMY_DATA, max_iter=1, base_lr=0, test_iter=None,
                        test_interval=None)
    assert cli.main(["train", "-solver", str(second), "-weights", f"{weights},{weights}"]) == 0
    assert capsys.readouterr().err.count(f"Finetuning from {weights}") == 2
    a = read_net_binary(weights)
    b = read_net_binary(tmp_path / "b" / "snap_iter_1.caffemodel")
    for la, lb in zip(a.layer, b.layer):
        assert [list(x.data) for x in la.blobs] == [list(x.data) for x in lb.blobs]


def test_train_and_test_state(tmp_path):
    staged = DUMMY_DATA.replace('top: "label"\n', 'top: "label" include { stage: "big" }\n')
    staged = staged.replace("dim: 8 dim: 6", "dim: 16 dim: 6").replace(
        "shape { dim: 8 }", "shape { dim: 16 }") + DUMMY_DATA.replace(
        'top: "label"\n', 'top: "label" exclude { stage: "big" }\n')
    path = write_case(tmp_path, staged, test_iter=1, train_state='{ stage: "big" }',
                      test_state='{ level: 0 }')
    s = get_solver(path)
    assert s.net.blobs["data"].shape[0] == 16
    assert s.test_nets[0].blobs["data"].shape[0] == 8
    assert s.test_nets[0].forward_only and not s.net.forward_only   # test nets only score


def test_pycaffe_style_api(tmp_path):
    from caffe_lite import solvers
    path = write_case(tmp_path, DUMMY_DATA, type='"Adam"', base_lr=0.01)
    s = solvers.SGDSolver(str(path))  # pycaffe: the class decides the rule, not `type`
    assert type(s) is solvers.SGDSolver and len(s.history) == 4
    a = solvers.get_solver(str(path))
    assert type(a) is solvers.AdamSolver and len(a.history) == 8
    assert a.net is not None and len(a.test_nets) == 1
    a.step(2)
    assert a.iter == 2
    a.solve()
    assert a.iter == 8
    assert (tmp_path / "snap_iter_8.solverstate").exists()
    b = solvers.AdamSolver(str(path))
    b.restore(str(tmp_path / "snap_iter_8.solverstate"))
    assert b.iter == 8
    b.share_weights(b.test_nets[0])
    assert np.shares_memory(b.test_nets[0].params["ip1"][0].data, b.net.params["ip1"][0].data)


def test_per_param_regularization_type_override(tmp_path):
    """SSL's ParamSpec.regularization_type replaces the solver's type for that param."""
    path = write_case(tmp_path, INPUT_DATA, momentum=0, weight_decay=0.1, base_lr=1,
                      lr_policy='"fixed"', test_iter=None, test_interval=None)
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(net_file.read_text().replace(
        'param { lr_mult: 1 decay_mult: 1 }',
        'param { lr_mult: 1 decay_mult: 1 regularization_type: "L1" }'))
    s = get_solver(path)
    assert s.regularization_types == ["L1", "L2", "L2", "L2"]
    net = s.net
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.normal(size=(8, 6))
    net.blobs["label"].data[...] = rng.integers(0, 4, 8)
    before = [b.data.copy() for b in net.learnable_params]
    net.clear_param_diffs()
    net.forward_backward()
    grads = [b.diff.copy() for b in net.learnable_params]
    s.step(1)
    w, g = before[0], grads[0]
    np.testing.assert_allclose(net.learnable_params[0].data, w - (g + 0.1 * np.sign(w)),
                               rtol=1e-5, atol=1e-6)
    w, g = before[2], grads[2]
    np.testing.assert_allclose(net.learnable_params[2].data, w - (g + 0.1 * w),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.learnable_params[1].data, before[1] - 2 * grads[1],
                               rtol=1e-5, atol=1e-6)
