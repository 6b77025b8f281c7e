"""The caffe-jacinto flow scripts end to end, as a user runs them, in --quick mode.

tools/train_cifar10_jacintonet11.sh (JacintoNet11 v2 on Fashion-MNIST-32 and on CIFAR-10)
and tools/train_mnist_lenet_sparse_quant.sh (LeNet on MNIST) run every stage -- initial,
l1reg, threshold, sparse fine-tune, test, test_quantize, optimize, final -- for a few
iterations on tiny LMDBs written here, so no data set needs downloading. Checked: the stage
headers and the summary they print, the files each stage leaves, that the summary's
sparsity counts are those of the caffemodels, that the zeros of the thresholded model stay
zero through the sparse and the final fine-tuning while the other weights train, and that
no stage warns of a fork field caffe-lite does not honour. Also: every stage folder of
models/jacintonet11 and models/lenet_sparse_quant is complete and its nets run, and bad
options are refused in one line before anything is written.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.data.datasets import write_images
from caffe_lite.io.binary import read_net_binary
from caffe_lite.io.blobs import blob_proto_to_array
from caffe_lite.io.prototxt import read_net_param, read_solver_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

from test_corpus_nets import fill_inputs, with_inputs

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ("initial", "l1reg", "sparse", "final")
COMMANDS = ["initial", "l1reg", "threshold", "threshold_test", "sparse", "test",
            "test_quantize", "optimize", "optimize_test", "final"]
LABELS = ["initial (L2)", "l1reg (L1)", "threshold", "sparse fine-tune", "test (sparse)",
          "test_quantize (sparse, fixed point)", "optimize (BN folded)",
          "final (sparse, fixed point, no BN)"]
QUICK_ITERS = {"initial": 2, "l1reg": 2, "sparse": 2, "final": 3}

JACINTO_CONVS = ["conv1a", "conv1b"] + [f"res{i}a_branch2{b}" for i in range(2, 6)
                                        for b in "ab"]
FLOWS = {
    # id: (script, extra args, LMDB stem, channels, side, snapshot stem, convolutions, BNs)
    "jacintonet11-fashion-mnist-32": ("train_cifar10_jacintonet11.sh", [], "fashion_mnist",
                                      1, 32, "jacintonet11v2", JACINTO_CONVS, 10),
    "jacintonet11-cifar10": ("train_cifar10_jacintonet11.sh", ["--dataset", "cifar10"],
                             "cifar10", 3, 32, "jacintonet11v2", JACINTO_CONVS, 10),
    "lenet-mnist": ("train_mnist_lenet_sparse_quant.sh", [], "mnist", 1, 28, "lenet",
                    ["conv1", "conv2"], 0),
}


def write_tiny_lmdbs(folder, stem, channels, side):
    """16 training and 8 test images in caffe-lite data's layout (<stem>_{train,test}_lmdb);
    each class has its own mean brightness, so the labels carry some signal."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 8)):
        labels = np.arange(count) % 10
        noise = rng.integers(0, 56, (count, channels, side, side))
        images = (noise + 20 * labels[:, None, None, None]).astype(np.uint8)
        write_images(str(folder / f"{stem}_{split}_lmdb"), images, labels)


@pytest.fixture(scope="module", params=list(FLOWS))
def flow(request, tmp_path_factory):
    script, args, lmdb_stem, channels, side, stem, convs, bns = FLOWS[request.param]
    base = tmp_path_factory.mktemp(request.param)
    data, out = base / "data", base / "out"
    data.mkdir()
    write_tiny_lmdbs(data, lmdb_stem, channels, side)
    env = dict(os.environ, CAFFE_LITE=f"{sys.executable} -m caffe_lite")
    run = subprocess.run(["bash", str(ROOT / "tools" / script), "--quick", *args,
                          "--data", str(data), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return dict(out=out, data=data, stdout=run.stdout, stem=stem, convs=convs, bns=bns)


def weights(path):
    """{layer: weight array} of the Convolution and InnerProduct layers of a caffemodel."""
    return {lp.name: blob_proto_to_array(lp.blobs[0]) for lp in read_net_binary(str(path)).layer
            if lp.type in ("Convolution", "InnerProduct") and lp.blobs}


def models(flow):
    out, stem = flow["out"], flow["stem"]
    return {"threshold": out / "threshold" / f"{stem}.caffemodel",
            "sparse": out / "sparse" / f"{stem}_iter_{QUICK_ITERS['sparse']}.caffemodel",
            "optimize": out / "optimize" / f"{stem}.caffemodel",
            "final": out / "final" / f"{stem}_iter_{QUICK_ITERS['final']}.caffemodel"}


def test_flow_prints_each_stage_and_the_summary(flow):
    stdout = flow["stdout"]
    headers = re.findall(r"^== (\w+): ", stdout, re.M)
    assert headers == COMMANDS
    summary = stdout[stdout.index("summary ("):]
    for label in LABELS:
        match = re.search(rf"^{re.escape(label)} +(\S+)$", summary, re.M)
        assert match, f"no accuracy line for {label!r} in\n{summary}"
        assert 0 <= float(match[1]) <= 1, match[0]
    if flow["bns"]:
        assert f"optimize folded {flow['bns']} BatchNorm layers" in summary
    else:
        assert "optimize folded nothing: the net has no BatchNorm" in summary
    written = (flow["out"] / "summary.txt").read_text()
    assert written.startswith("== ") and "summary (" in written and stdout.endswith(written)


def test_summary_sparsity_is_that_of_the_models(flow):
    summary = flow["stdout"]
    thresholded, sparse, final = (weights(models(flow)[k]) for k in ("threshold", "sparse",
                                                                     "final"))
    for name in flow["convs"]:
        row = re.search(rf"^{re.escape(name)} .*$", summary, re.M)
        assert row, f"no sparsity row for {name}"
        counts = re.findall(r"\((\d+)/(\d+)\)", row[0])
        expected = [(int(np.count_nonzero(w[name] == 0)), w[name].size)
                    for w in (thresholded, sparse, final)]
        assert [(int(z), int(n)) for z, n in counts] == expected, row[0]


def test_zeros_of_the_threshold_stay_zero_while_the_rest_trains(flow):
    stages = {k: weights(path) for k, path in models(flow).items()}
    some_zeros = False
    for name in flow["convs"]:
        before = stages["threshold"][name] == 0
        some_zeros |= bool(before.any())
        for earlier, later in (("threshold", "sparse"), ("optimize", "final")):
            w0, w1 = stages[earlier][name], stages[later][name]
            assert np.all(w1[w0 == 0] == 0), f"{name}: a zero of {earlier} moved in {later}"
        # the folded weights are the sparse ones scaled per output channel
        assert np.array_equal(stages["optimize"][name] == 0, stages["sparse"][name] == 0)
    assert some_zeros, "the threshold stage zeroed nothing"
    for earlier, later in (("threshold", "sparse"), ("optimize", "final")):
        assert any(not np.array_equal(stages[earlier][n], stages[later][n])
                   for n in flow["convs"]), f"{later} did not train"


def test_every_stage_leaves_its_files(flow):
    out, stem = flow["out"], flow["stem"]
    for stage in TRAINED + ("test", "test_quantize"):
        for name in ("train", "test", "deploy", "solver"):
            assert (out / stage / f"{name}.prototxt").is_file(), f"{stage}/{name}.prototxt"
    for stage in TRAINED:
        iters = QUICK_ITERS[stage]
        solver = (out / stage / "solver.prototxt").read_text()
        assert f"max_iter: {iters}\n" in solver
        assert f'train_net: "{out / stage / "train.prototxt"}"' in solver
        assert f'snapshot_prefix: "{out / stage / stem}"' in solver
        assert f'"{flow["data"]}/' in (out / stage / "train.prototxt").read_text()
        for ext in ("caffemodel", "solverstate"):
            assert (out / stage / f"{stem}_iter_{iters}.{ext}").is_file()
    for stage in ("threshold", "optimize"):
        for ext in ("prototxt", "caffemodel"):
            assert (out / stage / f"{stem}.{ext}").is_file(), f"{stage}/{stem}.{ext}"
    for command in COMMANDS:
        assert (out / command / f"{command}.log").stat().st_size > 0
    # snapshot_log: the final stage's prototxt log with the chosen fixed-point formats
    assert (out / "final" / f"{stem}_iter_{QUICK_ITERS['final']}.prototxt").is_file()


def test_quantized_stages_quantize(flow):
    """test_quantize (net-level `quantize: true`) switches quantization on at its second
    test batch, as caffe-jacinto 0.17 does; the final fine-tune (solver-level
    insert_quantization_param) at its quantization_start_iter, 2 of 3 in --quick (half of a
    stage shorter than 1000 iterations)."""
    out = flow["out"]
    assert "Enabling quantization" in (out / "test_quantize" / "test_quantize.log").read_text()
    assert "quantization_start_iter: 2\n" in (out / "final" / "solver.prototxt").read_text()
    assert "Quantization starts at iteration 2" in (out / "final" / "final.log").read_text()


def test_no_stage_warns_of_an_unhonoured_field(flow):
    warned = sorted({line.split("] ", 1)[-1] for command in COMMANDS
                     for line in (flow["out"] / command / f"{command}.log").read_text()
                     .splitlines() if "is not implemented in caffe-lite" in line})
    assert not warned, "\n".join(warned)


@pytest.mark.parametrize("flow", ["lenet-mnist"], indirect=True)
def test_from_threshold_keeps_the_trained_stages_and_redoes_the_rest(flow, tmp_path):
    """--from threshold in a finished run's folder: initial and l1reg are kept (their
    caffemodels untouched), the threshold runs with the new cap and every later stage
    again from its output."""
    out = tmp_path / "out"
    shutil.copytree(flow["out"], out)
    kept = {s: (out / s / "lenet_iter_2.caffemodel").read_bytes() for s in ("initial", "l1reg")}
    env = dict(os.environ, CAFFE_LITE=f"{sys.executable} -m caffe_lite")
    run = subprocess.run(["bash", str(ROOT / "tools" / "train_mnist_lenet_sparse_quant.sh"),
                          "--quick", "--data", str(flow["data"]), "--out", str(out),
                          "--from", "threshold", "--threshold-maxratio", "0.9",
                          "--threshold-value-max", "0.5"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.findall(r"^== (\w+): kept from the earlier run", run.stdout, re.M) == \
        ["initial", "l1reg"]
    assert re.findall(r"^== (\w+): ", run.stdout, re.M) == ["initial", "l1reg"] + COMMANDS[2:]
    for stage, data in kept.items():
        assert (out / stage / "lenet_iter_2.caffemodel").read_bytes() == data, stage
    log = (out / "threshold" / "threshold.log").read_text()
    assert "-threshold_value_max 0.5" in run.stdout and "MaxThreshold=" in log
    assert "-threshold_value_maxratio 0.9" in run.stdout


TEMPLATES = sorted([*(ROOT / "models").glob("jacintonet11/*/*/solver.prototxt"),
                    *(ROOT / "models").glob("lenet_sparse_quant/*/solver.prototxt")])


@pytest.mark.parametrize("solver", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT / "models")))
def test_model_template_stage_is_complete(solver):
    """Each stage folder holds TI's four files; its solver names its own train and test nets
    and snapshots into the data folder its nets read; the nets build (data as inputs, the
    ImageNet ones at 64x64) and run forward."""
    stage = solver.parent
    param = read_solver_param(str(solver))
    relative = stage.relative_to(ROOT).as_posix()
    assert param.train_net == f"{relative}/train.prototxt"
    assert list(param.test_net) == [f"{relative}/test.prototxt"]
    sources = set()
    for name, phase in (("train", caffe_pb2.TRAIN), ("test", caffe_pb2.TEST),
                        ("deploy", caffe_pb2.TEST)):
        net_param = read_net_param(str(stage / f"{name}.prototxt"))
        sources.update(lp.data_param.source for lp in net_param.layer if lp.type == "Data")
        path = stage / f"{name}.prototxt"
        runnable, size = with_inputs(net_param, path)
        if size and size > 100:
            runnable, _ = with_inputs(net_param, path, 64)
        net = Net(param=runnable, phase=phase)
        fill_inputs(net)
        assert all(np.all(np.isfinite(v)) for v in net.forward().values())
    folders = {os.path.dirname(s) for s in sources}
    assert folders == {os.path.dirname(param.snapshot_prefix)}, (folders, param.snapshot_prefix)


@pytest.mark.parametrize("args, message", [
    (["--data", "no/such/folder"], "no/such/folder: no such folder (build it with: "
                                   "caffe-lite data fashion-mnist -pad 2)"),
    (["--net", "lenet", "--dataset", "cifar10"], "lenet trains on mnist, not 'cifar10'"),
    (["--quick", "--sparse-iter", "0"], "'0' is not a positive count"),
    (["--out"], "--out needs a value"),
    (["--from", "bogus"], "--from: unknown stage 'bogus' (one of: initial l1reg threshold "
                          "sparse test optimize final)"),
    (["--from", "final"], "--from final needs the --out folder of an earlier run"),
    (["--from", "sparse", "--out", "nowhere"], "--from sparse: nowhere: no such folder"),
])
def test_flow_refuses_bad_options_in_one_line(args, message, tmp_path):
    run = subprocess.run(["bash", str(ROOT / "tools" / "train_cifar10_jacintonet11.sh"), *args],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 1
    assert run.stderr == f"train_cifar10_jacintonet11.sh: error: {message}\n"
    assert not list(tmp_path.iterdir()), "a refused run left files behind"
