"""NNMC's solver additions (FORK_FIELDS.md 4.2): LarsSGD with local_gw_ratio, and the
rampup_interval / rampup_lr warm-up and min_lr floor applied to every lr policy."""
from types import SimpleNamespace

import numpy as np
import pytest

from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver, lr_policy
from caffe_lite.solvers.lars_sgd import LarsSGDSolver, lars_rate
from test_solver_features import INPUT_DATA, write_case


def rate_at(it, **fields):
    p = caffe_pb2.SolverParameter(**fields)
    return float(lr_policy.get_learning_rate(p, SimpleNamespace(iter=it, current_step=0)))


@pytest.mark.parametrize("it, want", [(0, 0.01), (5, 0.01 + 0.09 * 0.5), (9, 0.01 + 0.09 * 0.9),
                                      (10, 0.1), (30, 0.1)])
def test_warm_up_is_linear_from_rampup_lr_to_the_policy_rate(it, want):
    got = rate_at(it, base_lr=0.1, lr_policy="fixed", rampup_interval=10, rampup_lr=0.01)
    assert got == pytest.approx(want, rel=4 * np.finfo(np.float32).eps)


def test_warm_up_never_exceeds_the_policy_rate():
    # a step policy already below the ramp: NNMC takes the smaller of the two
    fields = dict(base_lr=0.1, lr_policy="step", gamma=0.01, stepsize=2, rampup_interval=10,
                  rampup_lr=0.05)
    for it in range(10):
        policy = rate_at(it, **{k: v for k, v in fields.items() if "rampup" not in k})
        assert rate_at(it, **fields) <= policy + 1e-12
    assert rate_at(4, **fields) == pytest.approx(0.1 * 0.01 ** 2, rel=1e-6)


def test_min_lr_floors_every_policy_and_defaults_change_nothing():
    poly = dict(base_lr=0.1, lr_policy="poly", power=1.0, max_iter=100)
    assert rate_at(99, **poly, min_lr=0.01) == pytest.approx(0.01)
    assert rate_at(10, **poly, min_lr=0.01) == pytest.approx(0.09, rel=1e-6)
    assert rate_at(99, **poly) == rate_at(99, **poly, min_lr=0, rampup_interval=0)


def test_lars_rate_formula_and_zero_norms():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 3)).astype(np.float32)
    g = rng.normal(size=(7, 3)).astype(np.float32)
    want = 0.02 * np.linalg.norm(w) / (np.linalg.norm(g) + 0.0005 * np.linalg.norm(w))
    assert lars_rate(w, g, 0.02, 0.0005) == pytest.approx(want, rel=1e-5)
    assert lars_rate(np.zeros_like(w), g, 0.02, 0.0005) == 1     # zero-initialised biases
    assert lars_rate(w, np.zeros_like(g), 0.02, 0.0005) == 1


@pytest.mark.parametrize("spelling", ['type: "LarsSGD"', "solver_type: LARSSGD"])
def test_lars_sgd_step_scales_each_param_by_its_norms_and_ignores_lr_mult(tmp_path, spelling):
    path = write_case(tmp_path, INPUT_DATA, momentum=0.9, weight_decay=0.001,
                      local_gw_ratio=0.05, extra=spelling + "\n")
    solver = get_solver(path)
    assert isinstance(solver, LarsSGDSolver)
    net = solver.net
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.normal(size=(8, 6))
    net.blobs["label"].data[...] = rng.integers(0, 4, 8)
    before = [b.data.astype(np.float64) for b in net.learnable_params]
    net.clear_param_diffs()
    net.forward_backward()
    grads = [b.diff.astype(np.float64) for b in net.learnable_params]
    decay = [0.001 * m for m in net.params_weight_decay]
    solver.step(1)          # iteration 0 of a step policy: rate = base_lr = 0.1
    for w0, g, d, blob in zip(before, grads, decay, net.learnable_params):
        g = g + d * w0                     # the norm is taken after weight decay was added
        wn, gn = np.linalg.norm(w0), np.linalg.norm(g)
        local = 0.05 * wn / (gn + 0.001 * wn) if wn > 0 and gn > 0 else 1.0
        # ip1's bias has lr_mult 2: LarsSGD ignores it
        want = w0 - 0.1 * local * g
        np.testing.assert_allclose(blob.data, want, rtol=1e-5, atol=1e-7)
