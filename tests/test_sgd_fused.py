"""SGD's fused one-pass update (kernels/sgd_update.py) gives the bits of Caffe's step-by-step
update, and steps aside where a hook, an override or an L1 penalty is in the way."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver
from caffe_lite.solvers.sgd import SGDSolver

NET = """
layer { name: "x" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 3 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        param { lr_mult: 0 } param { lr_mult: 1 decay_mult: 3 }
        inner_product_param { num_output: 5 weight_filler { type: "xavier" }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def run(weight_decay, fused, monkeypatch, steps=4, regularization="L2"):
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(SGDSolver, "_fuses_update", lambda self: False)
        sp = caffe_pb2.SolverParameter(base_lr=0.05, lr_policy="fixed", momentum=0.9,
                                       weight_decay=weight_decay, display=0, max_iter=100,
                                       random_seed=3, type="SGD",
                                       regularization_type=regularization)
        text_format.Parse(NET, sp.train_net_param)
        solver = get_solver(sp)
        rng = np.random.default_rng(0)
        solver.net.blobs["x"].data[...] = rng.standard_normal(solver.net.blobs["x"].shape)
        solver.net.blobs["label"].data[...] = rng.integers(0, 5, 4)
        used = solver._fuses_update() if fused else False
        solver.step(steps)
        return used, [b.data.copy() for b in solver.net.learnable_params] + \
            [h.copy() for h in solver.history]


@pytest.mark.parametrize("weight_decay", [0.0, 0.004])
def test_fused_update_gives_the_step_by_step_bits(weight_decay, monkeypatch):
    used, fused = run(weight_decay, True, monkeypatch)
    assert used
    _, general = run(weight_decay, False, monkeypatch)
    for a, b in zip(fused, general):
        np.testing.assert_array_equal(a, b)


def test_l1_penalty_takes_the_general_path(monkeypatch):
    used, _ = run(0.004, True, monkeypatch, steps=1, regularization="L1")
    assert not used


def test_zero_decay_does_not_touch_an_infinite_weight():
    # Caffe skips Regularize when local_decay is 0: 0 * inf must not turn the diff into NaN
    from caffe_lite.kernels.sgd_update import sgd_update
    data = np.array([np.inf, 1.0], np.float32)
    diff = np.array([0.5, 0.5], np.float32)
    history = np.zeros(2, np.float32)
    sgd_update(data, diff, history, np.float32(0), np.float32(0.9), np.float32(0.1), False)
    np.testing.assert_array_equal(diff, np.float32(0.1) * np.float32(0.5))
    assert data[0] == np.inf and not np.isnan(diff).any()


def test_a_hook_that_is_not_idle_takes_the_general_path(monkeypatch):
    from caffe_lite.solvers.hooks import ParamHook

    class Halve(ParamHook):
        def update_value(self, param, it):
            param.diff[...] *= 0.5

    sp = caffe_pb2.SolverParameter(base_lr=0.05, lr_policy="fixed", display=0, max_iter=10,
                                   type="SGD")
    text_format.Parse(NET, sp.train_net_param)
    solver = get_solver(sp)
    solver.step(1)
    assert solver._fuses_update()           # only the idle DNS/INQ hook so far
    solver.add_hook(Halve())
    assert not solver._fuses_update()
