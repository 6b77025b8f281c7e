"""Every lr_policy against its formula (Caffe's SGDSolver::GetLearningRate), iterations 0..N."""
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import lr_policy
from caffe_lite.solvers.validate import Where


def solver_param(**fields):
    p = caffe_pb2.SolverParameter()
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def rates(param, iters=40):
    state = SimpleNamespace(iter=0, current_step=0)
    out = []
    for it in range(iters):
        state.iter = it
        out.append(float(lr_policy.get_learning_rate(param, state)))
    return out, state


def f32(x):
    return float(np.float32(x))


FORMULAS = {
    "fixed": (dict(base_lr=0.01), lambda p, it: p.base_lr),
    "step": (dict(base_lr=0.1, gamma=0.5, stepsize=7),
             lambda p, it: p.base_lr * p.gamma ** (it // p.stepsize)),
    "exp": (dict(base_lr=0.1, gamma=0.95), lambda p, it: p.base_lr * p.gamma ** it),
    "inv": (dict(base_lr=0.01, gamma=1e-4 * 100, power=0.75),
            lambda p, it: p.base_lr * (1 + p.gamma * it) ** (-p.power)),
    "poly": (dict(base_lr=0.05, power=2.0, max_iter=40),
             lambda p, it: p.base_lr * (1 - it / p.max_iter) ** p.power),
    "sigmoid": (dict(base_lr=0.02, gamma=0.3, stepsize=20),
                lambda p, it: p.base_lr / (1 + math.exp(-p.gamma * (it - p.stepsize)))),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_policy_matches_formula(name):
    fields, formula = FORMULAS[name]
    p = solver_param(lr_policy=name, **fields)
    got, _ = rates(p)
    want = [formula(p, it) for it in range(40)]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
    assert all(isinstance(r, float) for r in got)


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_multistep_advances_current_step_and_logs():
    p = solver_param(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[3, 5, 9])
    logger = logging.getLogger("caffe_lite")
    handler, level = ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        got, state = rates(p, 12)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    want = [1.0] * 3 + [0.1] * 2 + [0.01] * 4 + [0.001] * 3
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert state.current_step == 3
    msgs = [m for m in handler.messages if "MultiStep" in m]
    assert msgs == ["MultiStep Status: Iteration 3, step = 1",
                    "MultiStep Status: Iteration 5, step = 2",
                    "MultiStep Status: Iteration 9, step = 3"]


def test_multistep_resumes_from_current_step():
    # after a restore at iteration 6 with current_step 2, the rate is base * gamma^2
    p = solver_param(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[2, 4, 8])
    state = SimpleNamespace(iter=6, current_step=2)
    assert float(lr_policy.get_learning_rate(p, state)) == 0.25
    assert state.current_step == 2


def test_step_sets_current_step():
    p = solver_param(lr_policy="step", base_lr=1.0, gamma=0.5, stepsize=4)
    state = SimpleNamespace(iter=9, current_step=0)
    assert float(lr_policy.get_learning_rate(p, state)) == 0.25
    assert state.current_step == 2


def test_rate_is_float32_like_caffe():
    p = solver_param(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75)
    state = SimpleNamespace(iter=100, current_step=0)
    r = lr_policy.get_learning_rate(p, state)
    assert isinstance(r, np.float32)
    assert r == f32(r)


@pytest.mark.parametrize("fields,field", [
    (dict(lr_policy="step", base_lr=0.1, gamma=0.1), "lr_policy"),
    (dict(lr_policy="sigmoid", base_lr=0.1, gamma=0.1), "lr_policy"),
    (dict(lr_policy="step", base_lr=0.1, gamma=-1.0, stepsize=3), "gamma"),
    (dict(lr_policy="poly", base_lr=0.1, power=1.0), "lr_policy"),
    (dict(lr_policy="bogus", base_lr=0.1), "lr_policy"),
    (dict(base_lr=0.1), "lr_policy"),
])
def test_validation(fields, field):
    p = solver_param(**fields)
    with pytest.raises(CaffeError) as err:
        lr_policy.validate_lr_policy(p, Where("s.prototxt"), iterations=1)
    assert str(err.value).startswith(f"s.prototxt: {field}: ")
    assert "\n" not in str(err.value)


def test_solver_without_iterations_needs_only_a_known_policy(tmp_path):
    """Caffe runs a test-only solver (max_iter 0, e.g. poly without a usable max_iter)
    because it computes a rate only for an iteration; stepping it is then an error."""
    from caffe_lite.solvers import get_solver
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 } } }')
    path = tmp_path / "s.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "step" '
                    'snapshot_after_train: false')
    solver = get_solver(str(path))
    solver.solve()
    assert solver.iter == 0
    with pytest.raises(CaffeError, match="lr_policy: lr_policy 'step' needs stepsize > 0"):
        solver.step(1)
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "stpe"')
    with pytest.raises(CaffeError, match="Unknown learning rate policy: stpe"):
        get_solver(str(path))


def test_registry_extension():
    @lr_policy.register_lr_policy("test_halving")
    def halving(param, state):
        return np.float32(param.base_lr / 2 ** state.iter)
    try:
        p = solver_param(lr_policy="test_halving", base_lr=1.0)
        got, _ = rates(p, 3)
        assert got == [1.0, 0.5, 0.25]
    finally:
        lr_policy.LR_POLICIES.pop("test_halving")
        lr_policy.REQUIRED.pop("test_halving")
