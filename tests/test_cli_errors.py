"""Bad inputs to the upgrade commands: exit code 1, exactly one line on stderr naming the file
(and line:col for text), and the output file left as it was."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite import cli

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_MODEL = ROOT / "tests" / "data" / "golden" / "layers_a" / "weights_init.caffemodel"
SENTINEL = b"untouched\n"


pytestmark = pytest.mark.usefixtures("restore_glog")


def run(capsys, *argv):
    rc = cli.main(list(map(str, argv)))
    captured = capsys.readouterr()
    return rc, captured.err


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


RANDOM = np.random.default_rng(3).integers(0, 256, 2000, np.uint8).tobytes()

# (command, file content, expected location after the path, a word the message must hold)
TEXT_CASES = {
    "net_unknown_field": ("upgrade_net_proto_text",
                          'name: "x"\nlayer {\n  name: "a"\n  colour: 3\n}\n', ":4:3: ",
                          "colour"),
    "net_wrong_enum": ("upgrade_net_proto_text",
                       'layer {\n  pooling_param { pool: BIGGEST }\n}\n', ":2:", "BIGGEST"),
    "net_wrong_type": ("upgrade_net_proto_text",
                       'layer {\n  convolution_param { num_output: "ten" }\n}\n', ":2:",
                       "num_output"),
    "net_random_bytes": ("upgrade_net_proto_text", RANDOM, ":", "text"),
    "net_empty": ("upgrade_net_proto_text", "", ": ", "empty"),
    "solver_unknown_field": ("upgrade_solver_proto_text",
                             'net: "n.prototxt"\nbase_lr: 0.1\nlr_polisy: "fixed"\n',
                             ":3:1: ", "lr_polisy"),
    "solver_wrong_enum": ("upgrade_solver_proto_text", 'solver_mode: TPU\n', ":1:",
                          "TPU"),
    "solver_wrong_type": ("upgrade_solver_proto_text", 'max_iter: 1.5e3\n', ":1:",
                          "max_iter"),
    "solver_random_bytes": ("upgrade_solver_proto_text", RANDOM, ":", "text"),
    "solver_empty": ("upgrade_solver_proto_text", "  \n", ": ", "empty"),
}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_bad_text_input(capsys, tmp_path, case):
    command, content, where, word = TEXT_CASES[case]
    src = tmp_path / "in.prototxt"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out.prototxt"
    out.write_bytes(SENTINEL)
    rc, err = run(capsys, command, src, out)
    line = one_error_line(err)
    assert rc == 1
    assert str(src) + where in line and word in line, line
    assert out.read_bytes() == SENTINEL


@pytest.mark.parametrize("command", ["upgrade_net_proto_text", "upgrade_net_proto_binary",
                                     "upgrade_solver_proto_text"])
def test_missing_and_directory(capsys, tmp_path, command):
    out = tmp_path / "out"
    rc, err = run(capsys, command, tmp_path / "missing.prototxt", out)
    assert rc == 1 and "missing.prototxt: no such file" in one_error_line(err)
    rc, err = run(capsys, command, tmp_path, out)
    assert rc == 1 and f"{tmp_path}: is a directory" in one_error_line(err)
    assert not out.exists()


def test_truncated_caffemodel(capsys, tmp_path):
    src = tmp_path / "cut.caffemodel"
    data = GOLDEN_MODEL.read_bytes()
    src.write_bytes(data[:len(data) // 3])
    out = tmp_path / "out.caffemodel"
    out.write_bytes(SENTINEL)
    rc, err = run(capsys, "upgrade_net_proto_binary", src, out)
    assert rc == 1
    assert one_error_line(err).endswith(
        f"{src}: not a valid binary NetParameter (truncated or corrupt)")
    assert out.read_bytes() == SENTINEL


def test_empty_caffemodel(capsys, tmp_path):
    src = tmp_path / "empty.caffemodel"
    src.write_bytes(b"")
    rc, err = run(capsys, "upgrade_net_proto_binary", src, tmp_path / "o")
    assert rc == 1 and "empty.caffemodel: file is empty" in one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_failed_upgrade_writes_nothing(capsys, tmp_path):
    src = tmp_path / "v0.prototxt"
    src.write_text('layers { layer { name: "c" type: "convolution" } }\n')
    out = tmp_path / "out.prototxt"
    out.write_bytes(SENTINEL)
    rc, err = run(capsys, "upgrade_net_proto_text", src, out)
    assert rc == 1 and "Unknown layer name: convolution" in err
    assert out.read_bytes() == SENTINEL


def test_usage(capsys, tmp_path):
    rc, err = run(capsys, "upgrade_net_proto_text", tmp_path / "only_one")
    assert rc == 1 and "usage: caffe-lite upgrade_net_proto_text" in one_error_line(err)


def test_unwritable_output(capsys, tmp_path):
    src = tmp_path / "in.prototxt"
    src.write_text('layer { name: "a" type: "ReLU" }\n')
    rc, err = run(capsys, "upgrade_net_proto_text", src, tmp_path / "nodir" / "out.prototxt")
    assert rc == 1 and "cannot write" in one_error_line(err)


def test_upgrade_in_place(capsys, tmp_path):
    src = tmp_path / "net.prototxt"
    src.write_text('name: "n"\nlayers { name: "r" type: RELU bottom: "x" top: "x" }\n')
    rc, _ = run(capsys, "upgrade_net_proto_text", src, src)
    assert rc == 0
    assert 'type: "ReLU"' in src.read_text() and "layers" not in src.read_text()
    assert sorted(os.listdir(tmp_path)) == ["net.prototxt"]


def test_upgrade_binary_and_solver(capsys, tmp_path):
    out = tmp_path / "copy.caffemodel"
    rc, _ = run(capsys, "upgrade_net_proto_binary", GOLDEN_MODEL, out)
    assert rc == 0 and out.read_bytes() == GOLDEN_MODEL.read_bytes()
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nsolver_type: NESTEROV\n')
    rc, _ = run(capsys, "upgrade_solver_proto_text", solver, tmp_path / "new.prototxt")
    text = (tmp_path / "new.prototxt").read_text()
    assert rc == 0 and 'type: "Nesterov"' in text and "solver_type" not in text


def test_real_process(tmp_path):
    """The same through `python -m caffe_lite`, as a user runs it."""
    src = tmp_path / "bad.prototxt"
    src.write_text('layer {\n  name: "a"\n  typo: "ReLU"\n}\n')
    out = tmp_path / "out.prototxt"
    proc = subprocess.run([sys.executable, "-m", "caffe_lite", "upgrade_net_proto_text",
                           str(src), str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and f"{src}:3:3: unknown field 'typo'" in proc.stderr
    assert not out.exists()


def test_unexpected_exception_is_one_line_not_a_traceback(monkeypatch, capsys):
    from caffe_lite import cli

    def broken(argv):
        raise ValueError("boom\nsecond line")

    cli._load_commands()
    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command(broken, "", ""))
    monkeypatch.delenv("CAFFE_LITE_TRACEBACK", raising=False)
    assert cli.main(["broken"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ValueError: boom second line" in err[0]


def test_out_of_range_axis_names_file_line_and_layer(tmp_path, capsys):
    from caffe_lite import cli
    path = tmp_path / "net.prototxt"
    path.write_text(
        'layer { name: "d" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "sm" type: "Softmax" bottom: "data" top: "sm" softmax_param { axis: 7 } }\n')
    assert cli.main(["time", "-model", str(path), "-iterations", "1"]) == 1
    # the INFO log echoes the net; the error itself is the one "error:" line
    err = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
    assert len(err) == 1 and f"{path}:2:" in err[0] and "'sm' (Softmax)" in err[0]
    assert "axis 7 out of range" in err[0]


# (argv, the message after "caffe-lite NAME: error: ")
PREFIX_CASES = [
    (["train", "-solver"], "flag -solver needs a value"),
    (["train"], "Need a solver definition to train (-solver)."),
    (["train", "-solver", "s", "extra"], "unexpected argument 'extra'"),
    (["train", "-solver", "s", "-weights", "w", "-snapshot", "x"],
     "Give a snapshot to resume training or weights to finetune but not both."),
    (["train", "-level", "high"], "flag -level takes an int32, got 'high'"),
    (["test", "-model", "m"], "Need model weights to score (-weights)."),
    (["test"], "Need a model definition to score (-model)."),
    (["time"], "Need a model definition to time (-model)."),
    (["time", "-model", "m", "-phase", "VAL"], '-phase must be "TRAIN" or "TEST", got "VAL"'),
    (["time", "-model", "m", "-iterations", "0"], "-iterations must be >= 1, got 0"),
    (["time", "-model", "m", "-strict=perhaps"], "flag -strict takes true or false, "
                                                 "got 'perhaps'"),
    (["data"], "name one data set: mnist, fashion-mnist, cifar10 (none given); "
               "usage: caffe-lite data mnist|fashion-mnist|cifar10 [flags]"),
    (["data", "cifar10"], "give the CIFAR-10 archive with -from cifar-10-binary.tar.gz "
                          "(or cifar-10-python.tar.gz); no copy can be downloaded here"),
    (["compute_image_mean"], "usage: caffe-lite compute_image_mean [-backend lmdb] INPUT_DB "
                             "[OUTPUT_FILE]"),
    (["convert_imageset", "a"], "usage: caffe-lite convert_imageset [flags] ROOTFOLDER/ "
                                "LISTFILE DB_NAME (-help lists the flags)"),
    (["upgrade_solver_proto_text", "-x"], "unknown flag -x (flags: none; -help explains them)"),
]


@pytest.mark.parametrize("argv, message", PREFIX_CASES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_error_names_the_command_once(capsys, argv, message):
    rc, err = run(capsys, *argv)
    assert rc == 1
    assert one_error_line(err) == f"caffe-lite {argv[0]}: error: {message}"


def test_unknown_flag_lists_the_flags(capsys):
    rc, err = run(capsys, "train", "-solvr", "s")
    assert rc == 1 and one_error_line(err) == (
        "caffe-lite train: error: unknown flag -solvr (flags: -gpu -inq_portion -iterations -level "
        "-max_memory -sighup_effect -sigint_effect -snapshot -solver -stage -strict -weights; "
        "-help explains them)")


def test_strict_is_set_for_the_command_only(capsys, tmp_path, monkeypatch):
    from caffe_lite.compress import fork_fields
    calls = []

    def set_strict(flag):
        calls.append(flag)
        return False
    monkeypatch.setattr(fork_fields, "set_strict", set_strict)
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "d" '
                   'input_param { shape { dim: 1 dim: 2 } } }\n')
    assert cli.main(["time", "-model", str(net), "-iterations", "1", "-strict"]) == 0
    assert calls == [True, False]
    assert cli.main(["time", "-model", str(net), "-iterations", "1"]) == 0
    assert calls == [True, False]


@pytest.mark.parametrize("value", ["", "false", "x"])
def test_a_value_after_a_boolean_flag_names_the_flag(tmp_path, capsys, value):
    """gflags never gives `-strict false` the value: the error says how to (a fuzz case)."""
    from caffe_lite import cli
    assert cli.main(["time", "-model", "net.prototxt", "-strict", value]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"caffe-lite time: error: unexpected argument '{value}' after -strict (a "
                   "boolean flag takes a value only as -strict=VALUE)"]


def test_other_surplus_arguments_keep_the_plain_message(capsys):
    from caffe_lite import cli
    assert cli.main(["time", "extra", "-model", "net.prototxt"]) == 1
    assert capsys.readouterr().err.strip() == "caffe-lite time: error: unexpected argument 'extra'"
