"""DNS and INQ layers against NNMC's own binary (tests/data/golden_forks/dns_ip, inq_step).

dns_ip: DNSInnerProduct (gamma 0: a mask update at every iteration) + InnerProduct, SGD with
momentum and weight decay, 3 iterations from a dense caffemodel. inq_step: INQConvolution +
INQInnerProduct, run1 quantizes 0 -> 50% from a dense model, run2 50% -> 80% from NNMC's own
iteration-3 snapshot (a caffemodel whose layer fields collide with BVLC's numbers).
Masks and zero patterns must match exactly; weights within float32 summation order.
"""
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.io.prototxt import read_solver_param
from caffe_lite.solvers import get_solver

F = np.float32
EPS = float(np.finfo(F).eps)
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_forks"
# the longest float32 reduction per iteration: dns_ip's ip1 over 100 inputs, inq_step's
# ip1 over 6 x 3 x 3 pooled inputs (54) and conv1's 27 taps
REDUCTION = 100
BLOBS = (("w", 0), ("b", 1), ("wmask", 2), ("bmask", 3))


def solver_for(case, solver_file, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN / case)
    param = read_solver_param(solver_file)
    param.snapshot_prefix = str(tmp_path / "snap")
    param.snapshot = 0
    param.snapshot_after_train = False
    return get_solver(param, path=solver_file)


def printed_tol(value):
    """Half a unit in the 6th significant digit: what the fork's log rounded away."""
    return 0.5 * 10.0 ** (np.floor(np.log10(abs(value))) - 5)


def assert_layer_matches(solver, golden, layer, tag, k, masked=True):
    for key, i in BLOBS if masked else BLOBS[:2]:
        got = solver.net.params[layer][i].data
        want = golden[f"{layer}_{key}_{tag}"]
        if "mask" in key:
            np.testing.assert_array_equal(got, want, err_msg=f"{layer} {key} {tag}")
            continue
        tol = max(k, 1) * REDUCTION * EPS * np.abs(want).max()
        assert np.abs(got - want).max() <= tol, (layer, key, tag, np.abs(got - want).max())
        np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"{layer} {key} {tag}")


def test_dns_inner_product_three_iterations_match_nnmc(tmp_path, monkeypatch):
    golden = np.load(GOLDEN / "dns_ip" / "results.npz")
    solver = solver_for("dns_ip", "solver.prototxt", tmp_path, monkeypatch)
    solver.load_weights("init.caffemodel")
    ip1 = solver.net.layers[solver.net.layer_names.index("ip1")]
    np.testing.assert_array_equal(solver.net.params["ip1"][2].data, 1)   # the filler masks
    for k in (1, 2, 3):
        solver.step(1)
        loss = float(solver.net.blobs["loss"].data)
        want = float(golden["log_loss"][k - 1])
        assert abs(loss - want) <= printed_tol(want) + REDUCTION * EPS * loss
        assert_layer_matches(solver, golden, "ip1", f"it{k}", k)
        assert_layer_matches(solver, golden, "ip2", f"it{k}", k, masked=False)
    mu, std = ip1.statistics
    assert abs(mu - float(golden["log_dns_mu"][0])) <= printed_tol(mu)
    # the fork sums |w| and w^2 in float32 and takes std = sqrt(E[w^2] - mu^2): each sum off
    # by up to REDUCTION roundings of E[w^2], halved by the square root's derivative
    sum_tol = REDUCTION * EPS * (mu * mu + std * std) / (2 * std)
    assert abs(std - float(golden["log_dns_std"][0])) <= printed_tol(std) + sum_tol


@pytest.mark.parametrize("run,init", [("run1", "init.caffemodel"),
                                      ("run2", "run1_iter_3.caffemodel")])
def test_inq_step_matches_nnmc(run, init, tmp_path, monkeypatch, caffe_log_records):
    golden = np.load(GOLDEN / "inq_step" / "results.npz")
    warnings = caffe_log_records(30)
    fwd = solver_for("inq_step", f"solver_{run}_fwd.prototxt", tmp_path, monkeypatch)
    fwd.load_weights(init)
    fwd.step(1)
    for layer in ("conv1", "ip1"):
        assert_layer_matches(fwd, golden, layer, f"{run}_fwd0", 0)
    solver = solver_for("inq_step", f"solver_{run}_train.prototxt", tmp_path, monkeypatch)
    solver.load_weights(init)
    for k in (1, 2, 3):
        solver.step(1)
        loss = float(solver.net.blobs["loss"].data)
        want = float(golden[f"{run}_log_loss"][k - 1])
        assert abs(loss - want) <= printed_tol(want) + REDUCTION * EPS * loss
        for layer in ("conv1", "ip1"):
            assert_layer_matches(solver, golden, layer, f"{run}_it{k}", k)
            frozen = golden[f"{layer}_wmask_{run}_fwd0"] == 0
            np.testing.assert_array_equal(solver.net.params[layer][0].data[frozen],
                                          golden[f"{layer}_w_{run}_fwd0"][frozen])
    if run == "run2":
        # NNMC's caffemodel numbers inq_*_param 149/150: read as names and blobs, one line
        assert [w for w in warnings() if "run1_iter_3.caffemodel" in w and
                "names and blobs are read" in w]
