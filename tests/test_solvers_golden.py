"""The seven update rules against BVLC Caffe's own runs (tests/data/golden/solver_*).

For each case: build the solver from its solver.prototxt, start from weights_init.caffemodel,
and for steps 0..5 set the Input blobs, step(1), and compare every parameter and the loss
with what Caffe produced. Then restore Caffe's snap_iter_6.solverstate (history and weights
must equal ours after the same six steps) and go on one more step. The cases are copied into
tests/data so a fresh clone tests itself; ../shared/golden is used as well when present.
"""
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.io.binary import read_solver_state
from caffe_lite.io.blobs import blob_proto_to_array
from caffe_lite.io.prototxt import read_solver_param
from caffe_lite.solvers import get_solver

HERE = Path(__file__).resolve().parent
LOCAL = HERE / "data" / "golden"
SHARED = HERE.parent.parent / "shared" / "golden"
CASES = sorted(p.name for p in LOCAL.glob("solver_*"))
ROOTS = [("local", LOCAL)] + ([("shared", SHARED)] if SHARED.is_dir() else [])
RTOL, ATOL = 1e-4, 1e-5


def close(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return np.all(np.abs(got - want) <= np.maximum(ATOL, RTOL * np.abs(want)))


def make_solver(case_dir, tmp_path):
    solver_file = case_dir / "solver.prototxt"
    param = read_solver_param(solver_file)
    param.net = str(case_dir / param.net)
    param.snapshot_prefix = str(tmp_path / "snap")
    solver = get_solver(param, path=solver_file)
    solver.net.copy_from(case_dir / "weights_init.caffemodel")
    return solver


def feed(net, golden, k):
    for name in ("data", "label"):
        net.blobs[name].data[...] = golden[f"step{k}/input/{name}"]


def run_six(case_dir, tmp_path):
    golden = np.load(case_dir / "golden.npz")
    solver = make_solver(case_dir, tmp_path)
    for k in range(6):
        feed(solver.net, golden, k)
        solver.step(1)
        loss = float(golden[f"step{k}/loss"])
        assert close(solver.net.blobs["loss"].data, loss), (k, solver.net.blobs["loss"].data, loss)
        assert close(solver.smoothed_loss, loss), (k, solver.smoothed_loss, loss)
        for layer, blobs in solver.net.params.items():
            for i, blob in enumerate(blobs):
                want = golden[f"step{k}/param/{layer}/{i}"]
                assert close(blob.data, want), (
                    f"step {k} {layer}/{i}: max abs diff "
                    f"{np.max(np.abs(blob.data - want)):.3g}")
    return solver, golden


@pytest.mark.parametrize("root", [r[0] for r in ROOTS])
@pytest.mark.parametrize("case", CASES)
def test_six_steps_match_caffe(case, root, tmp_path):
    case_dir = dict(ROOTS)[root] / case
    solver, _ = run_six(case_dir, tmp_path)
    assert solver.iter == 6


@pytest.mark.parametrize("case", CASES)
def test_restore_caffe_solverstate(case, tmp_path):
    case_dir = LOCAL / case
    ours, golden = run_six(case_dir, tmp_path / "a")
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir()
    state = read_solver_state(case_dir / "snap_iter_6.solverstate")
    assert state.iter == 6
    assert len(state.history) == len(ours.history)
    for i, (bp, h) in enumerate(zip(state.history, ours.history)):
        assert close(h, blob_proto_to_array(bp).reshape(h.shape)), f"history {i}"
    assert state.current_step == ours.current_step

    solver = make_solver(case_dir, tmp_path / "b")
    solver.restore(case_dir / "snap_iter_6.solverstate")
    assert solver.iter == 6
    assert solver.current_step == state.current_step
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            assert close(blob.data, golden[f"step5/param/{layer}/{i}"])
    for i, (h, bp) in enumerate(zip(solver.history, state.history)):
        np.testing.assert_array_equal(h, blob_proto_to_array(bp).reshape(h.shape))
    feed(solver.net, golden, 0)
    feed(ours.net, golden, 0)
    solver.step(1)
    ours.step(1)
    assert solver.iter == 7
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            assert np.all(np.isfinite(blob.data))
            assert close(blob.data, ours.net.params[layer][i].data)


@pytest.mark.parametrize("case", CASES)
def test_our_snapshot_has_caffes_layout(case, tmp_path):
    case_dir = LOCAL / case
    solver, _ = run_six(case_dir, tmp_path)
    path = solver.snapshot()
    assert path == str(tmp_path / "snap_iter_6.solverstate")
    ours = read_solver_state(path)
    theirs = read_solver_state(case_dir / "snap_iter_6.solverstate")
    assert ours.iter == theirs.iter == 6
    assert ours.current_step == theirs.current_step
    assert ours.learned_net == str(tmp_path / "snap_iter_6.caffemodel")
    assert [tuple(h.shape.dim) for h in ours.history] == \
        [tuple(h.shape.dim) for h in theirs.history]
