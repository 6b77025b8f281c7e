"""The compile-ahead helper (caffe_lite/compile_ahead.py): on a cold kernel cache a second
process compiles the update and backward kernels; a run with it trains exactly as one
without it, and leaves a marker so that the next run starts no helper."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from caffe_lite import compile_ahead
from caffe_lite.io.prototxt import read_solver_param
from caffe_lite.threads import get_num_threads

ROOT = Path(__file__).resolve().parents[1]
COLD = "Kernel cache is cold: compiling the backward pass in a second process"

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 8 dim: 8 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\n'
          "max_iter: 3\ndisplay: 1\nrandom_seed: 7\nsnapshot_after_train: false\n")


@pytest.fixture
def job(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return tmp_path


def _env(cache, ahead):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), CAFFE_LITE_COMPILE_AHEAD=ahead)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _train(folder, cache, ahead):
    out = subprocess.run([sys.executable, "-m", "caffe_lite", "train", "-solver",
                          "solver.prototxt"], cwd=folder, env=_env(cache, ahead),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stderr


def _losses(log):
    return re.findall(r"Iteration (\d+) .*loss = (\S+)", log)


@pytest.mark.skipif(get_num_threads() < 2, reason="the helper needs a second thread")
def test_cold_run_starts_the_helper_once_and_trains_as_without_it(job, tmp_path):
    cache = tmp_path / "cache"
    cold = _train(job, cache, "1")
    assert COLD in cold
    markers = list(cache.rglob("compile_ahead-*.done"))
    assert len(markers) == 1, "the first update leaves the job's marker"
    warm = _train(job, cache, "1")
    assert COLD not in warm
    plain = _train(job, tmp_path / "other_cache", "0")
    assert COLD not in plain
    assert _losses(cold) == _losses(warm) == _losses(plain)
    assert len(_losses(cold)) == 3


def test_the_helper_compiles_the_update_and_the_backward_kernels(job, tmp_path):
    cache = tmp_path / "cache"
    param = read_solver_param(str(job / "solver.prototxt"))
    out = subprocess.run([sys.executable, "-m", "caffe_lite.compile_ahead", "solver.prototxt"],
                         input=param.SerializeToString(), cwd=job, env=_env(cache, "1"),
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cached = {p.name for p in cache.rglob("*.nbi")}
    for kernel in ("sgd_update.sgd_update", "neuron.relu_backward_in_place"):
        assert any(name.startswith(kernel + "-") for name in cached), (kernel, cached)
    # the forward kernels are the training process's part
    assert not any(name.startswith("neuron.relu_forward") for name in cached)


def test_no_helper_where_turned_off_or_marked(job, tmp_path, monkeypatch):
    param = read_solver_param(str(job / "solver.prototxt"))
    solver_path = str(job / "solver.prototxt")
    assert compile_ahead.start(param, solver_path, environ={"CAFFE_LITE_COMPILE_AHEAD": "0"}) \
        is None
    marker = compile_ahead.marker_path(param, solver_path)
    monkeypatch.setattr(compile_ahead, "marker_path", lambda *args: marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    existed = marker.exists()
    marker.touch()
    try:
        assert compile_ahead.start(param, solver_path, environ={}) is None
    finally:
        if not existed:
            marker.unlink()


def test_the_marker_follows_the_net_file(job):
    solver_path = str(job / "solver.prototxt")
    param = read_solver_param(solver_path)
    before = compile_ahead.marker_path(param, solver_path)
    (job / "net.prototxt").write_text(NET.replace("num_output: 3", "num_output: 4"))
    assert compile_ahead.marker_path(param, solver_path) != before
