"""Bad solver inputs through `caffe-lite train`: exit 1 and one line naming file, line, field."""
import re

import pytest

from caffe_lite import cli
from test_solver_features import DUMMY_DATA, LAYERS


pytestmark = pytest.mark.usefixtures("restore_glog")

NET = 'name: "tiny"\n' + DUMMY_DATA + LAYERS

# (solver text, 1-based line the error must name (None: no line), field, text in the message)
CASES = {
    "missing net file": (
        'base_lr: 0.1\nlr_policy: "fixed"\nnet: "nope.prototxt"\n', 3, "net", "nope.prototxt"),
    "missing test_net file": (
        'train_net: "net.prototxt"\ntest_net: "net.prototxt"\ntest_net: "gone.prototxt"\n'
        'test_iter: 1\ntest_iter: 1\ntest_interval: 5\nbase_lr: 0.1\nlr_policy: "fixed"\n',
        3, "test_net", "gone.prototxt"),
    "test_iter without test_interval": (
        'net: "net.prototxt"\ntest_iter: 10\nbase_lr: 0.1\nlr_policy: "fixed"\n', 2,
        "test_iter", "test_interval"),
    "test_interval zero": (
        'net: "net.prototxt"\ntest_iter: 10\ntest_interval: 0\nbase_lr: 0.1\n'
        'lr_policy: "fixed"\n', 3, "test_interval", "test_interval must be > 0"),
    "test nets and test_iter differ": (
        'train_net: "net.prototxt"\ntest_net: "net.prototxt"\ntest_net: "net.prototxt"\n'
        'test_iter: 5\ntest_interval: 10\nbase_lr: 0.1\nlr_policy: "fixed"\n', 4,
        "test_iter", "2 test net(s), 1 test_iter"),
    "test_state count": (
        'net: "net.prototxt"\ntest_iter: 5\ntest_interval: 10\ntest_state { stage: "a" }\n'
        'test_state { stage: "b" }\nbase_lr: 0.1\nlr_policy: "fixed"\n', 4, "test_state",
        "once per test net"),
    "no train net": ('base_lr: 0.1\nlr_policy: "fixed"\n', None, None,
                     "must specify a train net"),
    "two train nets": ('net: "net.prototxt"\ntrain_net: "net.prototxt"\nbase_lr: 0.1\n'
                       'lr_policy: "fixed"\n', 2, "train_net", "more than one"),
    "negative base_lr": ('net: "net.prototxt"\nbase_lr: -0.01\nlr_policy: "fixed"\n', 2,
                         "base_lr", "negative"),
    "unknown type": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\ntype: "Sgd"\n', 4,
                     "type", "Unknown solver type: Sgd (known types: AdaDelta, AdaGrad, Adam,"),
    "unknown lr_policy": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "cosine"\n', 3,
                          "lr_policy", "Unknown learning rate policy: cosine"),
    "no lr_policy": ('net: "net.prototxt"\nbase_lr: 0.1\n', None, "lr_policy", "not set"),
    "step without stepsize": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "step"\n'
                              'gamma: 0.1\nmax_iter: 10\n', 3, "lr_policy", "stepsize > 0"),
    "sigmoid with stepsize 0": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "sigmoid"\n'
                                'stepsize: 0\nmax_iter: 10\n', 4, "stepsize", "stepsize > 0"),
    "negative gamma": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "exp"\ngamma: -0.5\n'
                       'max_iter: 10\n', 4, "gamma", "gamma >= 0"),
    # (a policy's fields are checked only when iterations run: max_iter 0 runs none, as in
    # Caffe; test_lr_policy.py covers stepping such a solver)
    "momentum with AdaGrad": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                              'type: "AdaGrad"\nmomentum: 0.9\n', 5, "momentum",
                              "Momentum cannot be used with AdaGrad."),
    "rms_decay out of range": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                               'type: "RMSProp"\nrms_decay: 1.5\n', 5, "rms_decay",
                               "between 0 and 1"),
    "average_loss zero": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                          'average_loss: 0\n', 4, "average_loss", ">= 1"),
    "iter_size zero": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\niter_size: 0\n',
                       4, "iter_size", ">= 1"),
    "unknown regularization": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                               'weight_decay: 0.1\nregularization_type: "L3"\n', 5,
                               "regularization_type", "Unknown regularization type: L3"),
    "snapshot prefix folder missing": ('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                                       'snapshot: 10\nsnapshot_prefix: "no/such/dir/snap"\n',
                                       5, "snapshot_prefix", "Cannot write to snapshot prefix"),
    "comments and blocks before the field": (
        '# a comment with base_lr: 3 in it\ntrain_state {\n  level: 1\n}\nnet: "net.prototxt"\n'
        'lr_policy: "fixed"\n\n  base_lr:\n -1\n', 8, "base_lr", "negative"),
}


def run_train(capsys, *argv):
    rc = cli.main(["train", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_solver(name, tmp_path, capsys, monkeypatch):
    text, line, field, snippet = CASES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(text)
    rc, last = run_train(capsys, "-solver", "solver.prototxt")
    assert rc == 1
    assert last.startswith("caffe-lite train: error: solver.prototxt"), last
    where = "solver.prototxt" + (f":{line}" if line else "") + ": " + \
        (f"{field}: " if field else "")
    assert where in last, last
    assert snippet in last, last
    assert "Traceback" not in last


def test_unknown_field_is_a_parse_error(tmp_path, capsys):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "net.prototxt"\nbase_lr: 0.1\nlearning_rate: 3\n')
    rc, last = run_train(capsys, "-solver", str(path))
    assert rc == 1
    assert re.search(r"solver.prototxt:3:\d+: .*learning_rate", last), last


@pytest.mark.parametrize("argv,snippet", [
    ([], "Need a solver definition"),
    (["-solver", "s.prototxt", "-weights", "a.caffemodel", "-snapshot", "b.solverstate"],
     "but not both"),
    (["-solver", "s.prototxt", "-sigint_effect", "explode"], 'Invalid signal effect "explode"'),
    (["-solver", "missing.prototxt"], "missing.prototxt: no such file"),
    (["-solver", "s.prototxt", "-bogus", "1"], "unknown flag -bogus"),
])
def test_bad_command_line(argv, snippet, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, last = run_train(capsys, *argv)
    assert rc == 1
    assert snippet in last, last


def test_missing_weights_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\n'
                                              'lr_policy: "fixed"\nmax_iter: 1\n')
    rc, last = run_train(capsys, "-solver", "solver.prototxt", "-weights", "nope.caffemodel")
    assert rc == 1
    assert "nope.caffemodel" in last and "no such file" in last, last


def test_missing_snapshot_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\n'
                                              'lr_policy: "fixed"\nmax_iter: 1\n')
    rc, last = run_train(capsys, "-solver", "solver.prototxt", "-snapshot", "x.solverstate")
    assert rc == 1
    assert "x.solverstate" in last and "no such file" in last, last


def test_gpu_mode_is_one_warning(tmp_path, capsys, monkeypatch):
    from caffe_lite import common
    monkeypatch.setattr(common, "_gpu_warned", False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 2\n'
        'solver_mode: GPU\ndevice_id: 1\nsnapshot_after_train: false\n')
    rc = cli.main(["train", "-solver", "solver.prototxt", "-gpu", "0,1"])
    err = capsys.readouterr().err
    assert rc == 0
    warnings = [ln for ln in err.splitlines() if ln.startswith("W") and "GPU" in ln.upper()]
    assert len(warnings) == 1, warnings
