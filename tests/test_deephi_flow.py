"""DeePhi's pruning flow (#13) as a user runs it: `caffe-lite compress ana | compress |
finetune | transform | stat` on the tutorial's files, and their bad configs.

The flow runs through tools/prune_minivggnet.sh --quick (every command a subprocess,
`python -m caffe_lite compress ...`) on tiny LMDBs written here, with the tutorial's
train_val, solver and configs (models/minivggnet/pruning/, paths and lengths substituted):
a float model, ana, rounds config0, config1 and config7, transform, stat and time. Checked:
the files each step leaves where the tool leaves them, the summary, that the pruned
channels stay zero through each fine-tuning while the rest trains, that each round prunes at
least its rate, and that the transformed model computes what the masked one does. Bad
configs are one line naming the file and the field's line, in process.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite import cli
from caffe_lite.common import TEST
from caffe_lite.compress import channel_prune
from caffe_lite.compress.deephi_flow import Evaluator, PrunedModel
from caffe_lite.io.prototxt import read_deephi_config, read_net_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

from test_deephi_pruning import conv, layer
from test_jacinto_flow import write_tiny_lmdbs

ROOT = Path(__file__).resolve().parents[1]
PRUNING = ROOT / "models" / "minivggnet" / "pruning"
CORPUS = (ROOT.parent / "shared" / "corpus" / "xilinx-cifar10-minivggnet" / "docs"
          / "ML-CIFAR10-Caffe" / "deephi" / "miniVggNet" / "pruning")
COPY = ROOT / "tests" / "data" / "deephi_minivggnet"
ROUNDS = ("0", "1", "7")
RATES = {"0": 0.0, "1": 0.1, "7": 0.7}
FINETUNE_ITER = 2

pytestmark = pytest.mark.usefixtures("restore_glog")


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    base = tmp_path_factory.mktemp("deephi")
    data, out = base / "data", base / "out"
    data.mkdir()
    write_tiny_lmdbs(data, "cifar10", 3, 32)
    env = dict(os.environ, CAFFE_LITE=f"{sys.executable} -m caffe_lite")
    run = subprocess.run(["bash", str(ROOT / "tools" / "prune_minivggnet.sh"), "--quick",
                          "--dataset", "cifar10", "--data", str(data), "--out", str(out),
                          "--rounds", ",".join(ROUNDS)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return dict(out=out, stdout=run.stdout)


def rate_dir(out, k):
    return out / f"regular_rate_{RATES[k]:g}"


def snapshot(out, k):
    return rate_dir(out, k) / "snapshots" / f"_iter_{FINETUNE_ITER}.caffemodel"


def test_flow_runs_each_command_and_prints_the_summary(flow):
    out, stdout = flow["out"], flow["stdout"]
    commands = re.findall(r"^== (\w+): \S+ -m caffe_lite (compress \w+|\w+)", stdout, re.M)
    assert commands[:2] == [("baseline", "train"), ("ana", "compress ana")]
    for k in ROUNDS:
        assert (f"round{k}", "compress compress") in commands
        assert (f"round{k}", "compress finetune") in commands
    assert ("transform", "compress transform") in commands
    assert (out / "ana.regular").is_file()
    for k in ROUNDS:
        assert (rate_dir(out, k) / "sparse.caffemodel").is_file()
        assert snapshot(out, k).is_file()
    final = rate_dir(out, ROUNDS[-1])
    assert (final / "final.prototxt").is_file() and (final / "transformed.caffemodel").is_file()
    summary = stdout[stdout.index("== miniVggNet pruning on cifar10: summary"):]
    for k in ROUNDS:
        row = re.search(rf"^{k} +(\S+) +(\S+)% +(\S+)% +(\S+) +(\S+) ", summary, re.M)
        assert row, summary
        assert float(row[1]) == RATES[k]
        assert -float(row[2]) >= 100 * RATES[k] - 1e-9      # the rate is met
        assert 0 <= float(row[4]) <= 1 and 0 <= float(row[5]) <= 1
    assert re.search(r"^TEST forward, batch 128: baseline \S+ ms, transformed \S+ ms",
                     summary, re.M)
    assert (out / "summary.txt").read_text() in stdout
    # the same batches every time: the float model scores the same in ana and in round 0
    ana = re.search(r"ana: baseline top-1 = (\S+)", (out / "ana" / "ana.log").read_text())
    base = re.search(r"^Baseline +(\S+)", (out / "round0" / "compress.out").read_text(), re.M)
    assert float(ana[1]) == pytest.approx(float(base[1]), abs=5e-5)


def test_each_round_keeps_the_earlier_pruning_and_holds_it_through_finetune(flow):
    out = flow["out"]
    model = PrunedModel(out / "train_val.prototxt")
    graph = model.graph
    before = None
    for k in ROUNDS:
        sparse = PrunedModel(out / "train_val.prototxt", rate_dir(out, k) / "sparse.caffemodel")
        tuned = PrunedModel(out / "train_val.prototxt", snapshot(out, k))
        pruned = channel_prune.pruned_channels(graph, sparse.params())
        held = channel_prune.pruned_channels(graph, tuned.params())
        for root in pruned:
            assert np.array_equal(pruned[root], held[root]), f"round {k} moved a pruned channel"
            if before is not None:
                assert np.all(pruned[root][before[root]]), f"round {k} revived a channel"
        kept = {root: int((~p).sum()) for root, p in pruned.items()}
        full = model.totals().operations
        assert model.totals(kept).operations <= full * (1 - RATES[k])
        changed = [name for name, arrays in tuned.params().items()
                   if not np.array_equal(arrays[0], sparse.params()[name][0])]
        assert "conv1" in changed and "fc1" in changed, "the fine-tuning did not train"
        before = pruned


def test_transformed_model_equals_the_masked_one(flow):
    out = flow["out"]
    final = rate_dir(out, ROUNDS[-1])
    masked = Net(str(out / "train_val.prototxt"), str(snapshot(out, ROUNDS[-1])), TEST)
    small = Net(str(final / "final.prototxt"), str(final / "transformed.caffemodel"), TEST)
    masked.forward()
    small.forward()
    assert np.array_equal(masked.blobs["data"].data, small.blobs["data"].data)
    a, b = masked.blobs["fc2"].data, small.blobs["fc2"].data
    assert np.allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    convs = {lp.name: lp.convolution_param.num_output
             for lp in read_net_param(str(final / "final.prototxt")).layer
             if lp.type == "Convolution"}
    assert set(convs) == {"conv1", "conv2", "conv3", "conv4"}
    assert sum(convs.values()) < 32 + 32 + 64 + 64
    stat = (out / "transform" / "stat_final.out").read_text()
    compressed = re.search(r"^Compressed +\S+ +(\S+) +(\S+)",
                           (out / f"round{ROUNDS[-1]}" / "compress.out").read_text(), re.M)
    assert f"DeePhi's count: operations {compressed[2]}, parameters {compressed[1]} " in stat


def test_every_accuracy_reads_the_same_batches(flow):
    out = flow["out"]
    model = PrunedModel(out / "train_val.prototxt", out / "float.caffemodel")
    seen = []
    # 3 batches of 4 from 8 test images: a second pass that went on would start elsewhere
    evaluator = Evaluator(model.net, "top-1", 3,
                          lambda: seen.append(model.net.blobs["data"].data.copy()))
    first = evaluator.accuracy()
    assert evaluator.accuracy() == first
    assert all(np.array_equal(a, b) for a, b in zip(seen[:3], seen[3:]))
    assert not np.array_equal(seen[1], seen[2])


@pytest.mark.parametrize("tutorial", [
    pytest.param(CORPUS, id="corpus", marks=pytest.mark.skipif(
        not CORPUS.is_dir(), reason=f"{CORPUS} is not present")),
    pytest.param(COPY, id="tests-data")])
def test_models_files_are_the_tutorials_but_paths(tutorial):
    paths = ("workspace", "model", "weights", "solver")
    names = sorted(p.name for p in tutorial.glob("config*.prototxt"))
    assert len(names) == 8          # config, config0 to config7 but config5
    for name in names:
        ours = read_deephi_config(PRUNING / name)
        theirs = read_deephi_config(tutorial / name)
        for field in paths:
            ours.ClearField(field)
            theirs.ClearField(field)
        assert ours == theirs, name
    for name, fields in (("train_val.prototxt", ("source", "mean_file")),
                         ("solver.prototxt", ("net", "snapshot_prefix", "solver_mode"))):
        ours, theirs = ((PRUNING / name).read_text(), (tutorial / name).read_text())
        strip = re.compile(rf"^\s*#?\s*({'|'.join(fields)}):.*$", re.M)
        assert strip.sub("", ours) == strip.sub("", theirs), name


# --- bad configs ---------------------------------------------------------------------------

XAVIER = 'weight_filler { type: "xavier" }'
TINY_NET = "\n".join([
    'name: "tiny"',
    'layer { name: "data" type: "Input" top: "data" top: "label" '
    'input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } shape { dim: 2 } } }',
    conv("conv1", "data", 4, pad=0, extra=XAVIER),
    layer("relu1", "ReLU", ["conv1"], "conv1"),
    layer("fc", "InnerProduct", ["conv1"], "fc",
          f"inner_product_param {{ num_output: 3 {XAVIER} }}"),
    layer("accuracy-top1", "Accuracy", ["fc", "label"], "top-1"),
])


@pytest.fixture
def tiny(tmp_path):
    model = tmp_path / "train_val.prototxt"
    model.write_text(TINY_NET)
    weights = tmp_path / "float.caffemodel"
    Net(param=text_format.Parse(TINY_NET, caffe_pb2.NetParameter()), phase=TEST).save(
        str(weights))
    return tmp_path


def config_text(folder, **change):
    fields = dict(workspace=f'"{folder / "ws"}"', gpu='"0"', test_iter="1",
                  acc_name='"top-1"', model=f'"{folder / "train_val.prototxt"}"',
                  weights=f'"{folder / "float.caffemodel"}"',
                  solver=f'"{folder / "solver.prototxt"}"', rate="0.1",
                  pruner="{ method: REGULAR }")
    fields.update(change)
    return "".join(f"{k}: {v}\n" if k != "pruner" else f"pruner {v}\n"
                   for k, v in fields.items() if v is not None)


def error_of(capsys, monkeypatch, *argv):
    monkeypatch.setenv("GLOG_minloglevel", "2")
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("change, line, words", [
    (dict(model=None), None, "missing field 'model'"),
    (dict(rate="1.5"), 8, "rate: 1.5 is outside [0, 1)"),
    (dict(rate="-0.1"), 8, "rate: -0.1 is outside [0, 1)"),
    (dict(pruner="{ method: SPARSE }"), 9, "unknown value SPARSE for field 'method'"),
    (dict(test_iter="0"), 3, "test_iter: must be at least 1"),
    (dict(acc_name='"top-3"'), 4, "acc_name: 'top-3' is not an output of the TEST net"),
    (dict(weights='"nowhere.caffemodel"'), 6, "weights: cannot open 'nowhere.caffemodel'"),
])
@pytest.mark.parametrize("command", ["compress", "deephi_compress"])
def test_bad_config_is_one_line_at_its_field(capsys, monkeypatch, tiny, command, change,
                                             line, words):
    config = tiny / "config.prototxt"
    config.write_text(config_text(tiny, **change))
    err = error_of(capsys, monkeypatch, command, "compress", "-config", config)
    assert err.startswith(f"caffe-lite {command}: error: {config}:"
                          + (f"{line}:" if line else " ")), err
    assert words in err


def test_unwritable_workspace_is_refused_at_its_line(capsys, monkeypatch, tiny):
    (tiny / "a_file").write_text("")
    config = tiny / "config.prototxt"
    config.write_text(config_text(tiny, workspace=f'"{tiny / "a_file" / "ws"}"'))
    err = error_of(capsys, monkeypatch, "compress", "ana", "-config", config)
    assert err.startswith(f"caffe-lite compress: error: {config}:1: workspace: cannot create")


def test_compress_needs_the_analysis_first(capsys, monkeypatch, tiny):
    config = tiny / "config.prototxt"
    config.write_text(config_text(tiny))
    err = error_of(capsys, monkeypatch, "compress", "compress", "-config", config)
    assert "no analysis in the workspace" in err and "compress ana -config" in err


@pytest.mark.parametrize("argv, words", [
    ([], "which subcommand?"),
    (["prune"], "unknown subcommand 'prune'"),
    (["transform", "-model", "m.prototxt"], "Need the fine-tuned weights"),
    (["stat", "-config", "c.prototxt"], "stat takes -model and -weights, not -config"),
    (["ana"], "Need a DeePhi prune config (-config)"),
])
def test_bad_command_lines(capsys, monkeypatch, argv, words):
    err = error_of(capsys, monkeypatch, "compress", *argv)
    assert words in err


def test_stat_of_the_tiny_model_in_process(capsys, tiny):
    rc = cli.main(["compress", "stat", "-model", str(tiny / "train_val.prototxt")])
    out = capsys.readouterr().out
    # conv1: 4 x 4 x 4 outputs x (2 x 9 + 1) = 1,216 operations, 4 x 9 + 4 = 40 parameters;
    # fc: 3 x (2 x 64 + 1) = 387 operations, 3 x 64 + 3 = 195 parameters
    assert rc == 0
    assert "DeePhi's count: operations 1,216, parameters 40 " in out
    assert "Full count, with the fully connected layers: operations 1,603, parameters 235" in out


def test_ana_progress_bar_on_a_terminal(tiny):
    pytest.importorskip("pyte")
    from test_progress_tty import BAR, assert_clean_screen, render, run_on_terminal
    config = tiny / "config.prototxt"
    config.write_text(config_text(tiny, test_iter="3"))
    rc, raw = run_on_terminal(["compress", "ana", "-config", str(config)], tiny)
    lines = render(raw)
    assert rc == 0, "\n".join(lines)
    assert b"ana:" in raw and BAR.search(raw.decode("utf-8", "replace"))
    assert_clean_screen(lines)
    text = "\n".join(lines)
    assert len(re.findall(r"^I\d{4} .*\] ana: conv1 ratio 0\.\d \(\d of 4 channels\): "
                          r"top-1 = [\d.]+$", text, re.M)) == 9
    assert (tiny / "ws" / "ana.regular").is_file()
