"""models/lenet_dns and models/lenet_inq as a user runs them: tools/train_mnist_lenet_dns.sh
and tools/train_mnist_lenet_inq.sh in --quick mode on tiny LMDBs (every stage, a few
iterations), then what they wrote: DNS masks in the caffemodel and a stat table; every INQ
step freezing its portion, the last one leaving only zeros and powers of two. Also: the
forks' files in models/ build with no unhonoured-field warning, and the corpus's NNMC LeNet
solvers run a few iterations unchanged from a Caffe-root layout."""
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.compress import inq
from caffe_lite.io.binary import read_net_binary
from caffe_lite.io.prototxt import read_solver_param
from caffe_lite.solvers import get_solver

import corpus
from test_jacinto_flow import write_tiny_lmdbs

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, CAFFE_LITE=f"{sys.executable} -m caffe_lite")


def run_flow(script, base, *args):
    data, out = base / "data", base / "out"
    data.mkdir()
    write_tiny_lmdbs(data, "mnist", 1, 28)
    run = subprocess.run(["bash", str(ROOT / "tools" / script), "--quick", "--data",
                          str(data), "--out", str(out), *args],
                         capture_output=True, text=True, env=ENV, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return out, run.stdout


def test_dns_flow_prunes_and_reports(tmp_path):
    out, stdout = run_flow("train_mnist_lenet_dns.sh", tmp_path)
    model = read_net_binary(str(out / "dns" / "lenet_iter_4.caffemodel"))
    layers = {lp.name: lp for lp in model.layer if lp.blobs}
    for name in ("conv1", "conv2", "ip1", "ip2"):
        assert len(layers[name].blobs) == 4, name          # weights, bias, two masks
        mask = np.array(layers[name].blobs[2].data)
        assert set(np.unique(mask)) <= {0.0, 1.0}
    assert "== LeNet DNS: summary" in stdout and "DNS accuracy:" in stdout
    assert "Parameters kept:" in stdout and "Stored:" in stdout
    assert (out / "summary.txt").read_text() in stdout + "\n"
    for stage in ("dense", "dns"):
        assert "Optimization Done." in (out / stage / f"{stage}.log").read_text()


def test_inq_flow_quantizes_step_by_step(tmp_path):
    out, stdout = run_flow("train_mnist_lenet_inq.sh", tmp_path)
    frozen = {}
    for step, portion in ((30, 0.3), (60, 0.6), (80, 0.8), (100, 1.0)):
        iters = 1 if step == 100 else 3
        model = read_net_binary(str(out / f"inq_{step}" / f"lenet_iter_{iters}.caffemodel"))
        for lp in model.layer:
            if not lp.blobs:
                continue
            w, mask = np.array(lp.blobs[0].data), np.array(lp.blobs[2].data)
            done = mask == 0
            assert abs(done.mean() - portion) <= 1.5 / w.size + 1e-6, (step, lp.name)
            assert inq.power_of_two_report(w[done])[0], (step, lp.name)
            if lp.name in frozen:                         # what was frozen stays
                before_done, before_w = frozen[lp.name]
                np.testing.assert_array_equal(w[before_done], before_w[before_done])
                assert done[before_done].all()
            frozen[lp.name] = (done, w)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        row = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        assert " yes: " in row, row
    assert "INQ 100% accuracy:" in stdout


@pytest.mark.parametrize("script", ["train_mnist_lenet_dns.sh", "train_mnist_lenet_inq.sh"])
def test_flow_option_errors_are_one_line(script, tmp_path):
    run = subprocess.run(["bash", str(ROOT / "tools" / script), "--quick", "--batch", "0",
                          "--data", str(tmp_path)], capture_output=True, text=True, env=ENV)
    assert run.returncode == 1
    assert run.stderr == f"{script}: error: '0' is not a positive count\n"
    run = subprocess.run(["bash", str(ROOT / "tools" / script), "--data",
                          str(tmp_path / "none")], capture_output=True, text=True, env=ENV)
    assert run.stderr.endswith("no such folder (build it with: caffe-lite data mnist)\n")


MODEL_SOLVERS = ["lenet_dns/lenet_solver_dns.prototxt"] + [
    f"lenet_inq/lenet_solver_inq_{p}.prototxt" for p in (30, 60, 80, 100)]


def caffe_root_copy(tmp_path, files, net_dir, data_dir):
    """The files under tmp_path/net_dir and tiny MNIST LMDBs in tmp_path/data_dir, so that
    relative paths written for a Caffe root (or our project root) resolve."""
    (tmp_path / net_dir).mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, tmp_path / net_dir / Path(f).name)
    (tmp_path / data_dir).mkdir(parents=True, exist_ok=True)
    write_tiny_lmdbs(tmp_path / data_dir, "mnist", 1, 28)


def run_solver_steps(solver_path, cwd, monkeypatch, steps=2):
    monkeypatch.chdir(cwd)
    param = read_solver_param(solver_path)
    param.test_iter[:] = [1]
    param.snapshot, param.snapshot_after_train = 0, False
    solver = get_solver(param, path=solver_path)
    solver.step(steps)
    return solver


@pytest.mark.parametrize("solver_name", MODEL_SOLVERS)
def test_model_solvers_train_without_warnings(solver_name, tmp_path, monkeypatch,
                                              caffe_log_records):
    warnings = caffe_log_records(logging.WARNING)
    model_dir = ROOT / "models" / Path(solver_name).parent
    caffe_root_copy(tmp_path, sorted(model_dir.glob("*.prototxt")),
                    f"models/{model_dir.name}", "data/mnist")
    solver = run_solver_steps(f"models/{solver_name}", tmp_path, monkeypatch)
    assert np.isfinite(float(solver.net.blobs["loss"].data))
    assert not warnings()


NNMC_MNIST = corpus.CORPUS / "nnmc" / "examples" / "mnist"
NNMC_SOLVERS = sorted(NNMC_MNIST.glob("lenet_solver_*.prototxt")) if NNMC_MNIST.is_dir() else []


@pytest.mark.skipif(not NNMC_SOLVERS, reason=f"{NNMC_MNIST} is not present")
@pytest.mark.parametrize("solver_file", [p.name for p in NNMC_SOLVERS] or ["none"])
def test_nnmc_corpus_solvers_run_unchanged(solver_file, tmp_path, monkeypatch,
                                           caffe_log_records):
    """NNMC's LeNet solvers, byte for byte, from a Caffe root whose examples/mnist holds the
    corpus nets and (tiny) MNIST LMDBs where the nets look for them."""
    warnings = caffe_log_records(logging.WARNING)
    caffe_root_copy(tmp_path, sorted(NNMC_MNIST.glob("*.prototxt")), "examples/mnist",
                    "examples/mnist")
    solver = run_solver_steps(f"examples/mnist/{solver_file}", tmp_path, monkeypatch)
    assert np.isfinite(float(solver.net.blobs["loss"].data))
    # solver_mode: GPU is the one warning a fork's solver may give (CPU is used)
    assert all("GPU" in w for w in warnings()), warnings()
