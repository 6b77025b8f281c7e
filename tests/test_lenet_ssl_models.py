"""models/lenet_ssl: SSL's LeNet group-lasso example and its fine-tuning step, as files a user
runs. Every net builds (data layers as inputs) and trains a step with the SSL hook active and
no unhonoured-field warning; the fine-tuning net freezes the all-zero rows and columns of a
group-lasso model; the deploy variants with conv_mode LOWERED_CCNMM and LOWERED_CSRMM give
the dense outputs on a structured-sparse weight set."""
import logging
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.common import TEST
from caffe_lite.io.prototxt import read_net_param, read_solver_param
from caffe_lite.net import Net
from caffe_lite.solvers.factory import get_solver

from test_corpus_nets import fill_inputs, with_inputs

MODELS = Path(__file__).resolve().parent.parent / "models" / "lenet_ssl"
SOLVERS = ["lenet_grouplasso_solver.prototxt", "lenet_grouplasso_0002_solver.prototxt",
           "lenet_ft_solver.prototxt"]


def input_solver(tmp_path, solver_name):
    """The solver with its net's data layers as inputs, written into tmp_path."""
    sp = read_solver_param(str(MODELS / solver_name))
    net_path = MODELS.parent.parent / sp.net
    param, _ = with_inputs(read_net_param(str(net_path)), net_path)
    sp.ClearField("net")
    sp.net_param.CopyFrom(param)
    sp.max_iter, sp.display, sp.test_interval = 2, 1, 1000
    sp.snapshot_prefix = str(tmp_path / "snap")
    sp.snapshot, sp.snapshot_after_train = 0, False
    sp.ClearField("test_iter")
    path = tmp_path / "solver.prototxt"
    path.write_text(str(sp))
    return path


@pytest.mark.parametrize("solver_name", SOLVERS)
def test_solver_trains_a_step_without_warnings(solver_name, tmp_path, caffe_log_records):
    warnings = caffe_log_records(logging.WARNING)
    solver = get_solver(str(input_solver(tmp_path, solver_name)))
    fill_inputs(solver.net)
    solver.step(2)
    assert not [w for w in warnings() if "not implemented" in w]
    names = [type(h).__name__ for h in solver.hooks]
    assert "SSLTraining" in names


def test_fine_tuning_keeps_all_zero_rows_and_columns(tmp_path):
    sp_path = input_solver(tmp_path, "lenet_ft_solver.prototxt")
    solver = get_solver(str(sp_path))
    w = solver.net.params["conv2"][0].data
    mat = w.reshape(50, -1)
    mat[:10] = 0          # ten filters
    mat[:, :100] = 0      # the first four input channels
    rng = np.random.default_rng(0)
    solver.net.params["conv1"][0].data[...] += rng.normal(0, 0.1, (20, 1, 5, 5))
    fill_inputs(solver.net)
    live = mat[10:, 100:].copy()
    solver.step(2)
    mat = solver.net.params["conv2"][0].data.reshape(50, -1)
    assert not mat[:10].any() and not mat[:, :100].any()
    assert np.count_nonzero(mat[10:, 100:] != live) > live.size // 2, "the rest should train"


@pytest.mark.parametrize("variant", ["lenet_deploy_ccnmm.prototxt",
                                     "lenet_deploy_csrmm.prototxt"])
def test_sparse_deploy_nets_equal_the_dense_one(variant):
    dense = Net(str(MODELS / "lenet_deploy.prototxt"), phase=TEST)
    sparse = Net(str(MODELS / variant), phase=TEST)
    rng = np.random.default_rng(1)
    for name, params in dense.params.items():
        for k, blob in enumerate(params):
            blob.data[...] = rng.normal(0, 0.1, blob.data.shape)
    conv2 = dense.params["conv2"][0].data.reshape(50, -1)
    conv2[::3] = 0
    conv2[:, 25:300] = 0
    dense.params["conv1"][0].data[5:] = 0
    for name, params in dense.params.items():
        for k, blob in enumerate(params):
            sparse.params[name][k].data[...] = blob.data
    x = rng.uniform(0, 1, dense.blobs["data"].data.shape).astype(np.float32)
    want = dense.forward(data=x)["prob"].copy()
    got = sparse.forward(data=x)["prob"]
    # softmax outputs in [0, 1]; sums of 500 float32 products in a different order
    assert np.max(np.abs(got - want)) < 500 * 8 * np.finfo(np.float32).eps
