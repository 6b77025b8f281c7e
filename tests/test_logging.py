"""Logging as a Caffe user meets it: every command shows its INFO lines, glog's environment
variables (GLOG_minloglevel, GLOG_logtostderr, GLOG_log_dir) behave as in Caffe's tools, and
importing caffe_lite leaves a script's logging as it was."""
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from caffe_lite import cli
from caffe_lite.log import LOG, log_file_name

ROOT = Path(__file__).resolve().parent.parent
GLOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] (.*)$")

# Input blobs and a loss: runs anywhere, no LMDB
NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
LAYERS = ["data", "label", "ip", "loss"]
GLOG_VARS = ("GLOG_minloglevel", "GLOG_logtostderr", "GLOG_log_dir")


@pytest.fixture
def net(tmp_path, monkeypatch):
    for name in GLOG_VARS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return path


def _env(**glog):
    env = {k: v for k, v in os.environ.items() if k not in GLOG_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update(glog)
    return env


def glog_messages(text, letters="IWEF"):
    return [m[2] for m in map(GLOG_LINE.match, text.splitlines()) if m and m[1] in letters]


def test_time_prints_caffes_table_by_default(net):
    """A fresh `caffe-lite time` process, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "caffe_lite", "time", "-model", str(net),
                           "-iterations", "3"], env=_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    messages = glog_messages(proc.stderr, "I")
    iterations = [m for m in messages if m.startswith("Iteration: ")]
    assert len(iterations) == 3 and all(
        re.fullmatch(r"Iteration: \d forward-backward time: [\d.e+-]+ ms\.", m)
        for m in iterations)
    table = messages[messages.index("Average time per layer: ") + 1:]
    for i, name in enumerate(LAYERS):
        # Caffe's std::setw(10) << name << "\tforward: " << ms << " ms."
        assert re.fullmatch(rf" *{name}\tforward: [\d.e+-]+ ms\.", table[2 * i])
        assert len(table[2 * i].split("\t")[0]) == 10
        assert re.fullmatch(rf" *{name}\tbackward: [\d.e+-]+ ms\.", table[2 * i + 1])
    summary = table[2 * len(LAYERS):]
    for line, label in zip(summary, ["Average Forward pass", "Average Backward pass",
                                     "Average Forward-Backward", "Total Time"]):
        assert re.fullmatch(rf"{label}: [\d.e+-]+ ms\.", line), line
    assert summary[4] == "*** Benchmark ends ***"
    average = float(summary[2].split()[-2])
    total = float(summary[3].split()[-2])
    # both come from one timer, printed with %g's 6 significant digits
    assert abs(average * 3 - total) <= 1e-5 * total


def test_importing_caffe_lite_leaves_logging_alone():
    script = """
import logging, sys
root = logging.getLogger()
before = (list(root.handlers), root.level, logging.getLogger("caffe_lite").handlers[:],
          logging.getLogger("caffe_lite").level, logging.getLogger("caffe_lite").propagate)
import caffe_lite, caffe_lite.cli, caffe_lite.solvers.progress
lib = logging.getLogger("caffe_lite")
after = (list(root.handlers), root.level, lib.handlers[:], lib.level, lib.propagate)
assert before == after == ([], logging.WARNING, [], logging.NOTSET, True), after
lib.info("an info line nobody asked for")
lib.warning("a warning reaches the last-resort handler")
logging.basicConfig(format="user:%(name)s:%(message)s", level=logging.INFO, stream=sys.stdout)
lib.info("the script's own format")
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "a warning reaches the last-resort handler\n"
    assert proc.stdout == "user:caffe_lite:the script's own format\n"


def test_a_command_puts_the_logging_state_back(net, capsys):
    """In-process: a handler the caller put on the logger sees the command's lines too."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    LOG.addHandler(handler)
    try:
        saved = (LOG.handlers[:], LOG.level, LOG.propagate)
        assert cli.main(["time", "-model", str(net), "-iterations", "1"]) == 0
        assert (LOG.handlers[:], LOG.level, LOG.propagate) == saved
    finally:
        LOG.removeHandler(handler)
    first_lines = [message.split("\n")[0] for message in seen]
    assert glog_messages(capsys.readouterr().err) == first_lines
    assert "*** Benchmark ends ***" in seen


@pytest.mark.parametrize("level, letters", [("0", "IW"), ("1", "W"), ("2", ""), ("3", "")])
def test_minloglevel_drops_lines_below_it(net, capsys, monkeypatch, level, letters):
    monkeypatch.setenv("GLOG_minloglevel", level)
    # -gpu makes one warning line
    assert cli.main(["time", "-model", str(net), "-iterations", "1", "-gpu", "0"]) == 0
    err = capsys.readouterr().err
    seen = {m[1] for m in map(GLOG_LINE.match, err.splitlines()) if m}
    assert seen == set(letters)
    assert ("Total Time" in err) == ("I" in letters)


def test_minloglevel_keeps_the_error_line(net, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "3")
    assert cli.main(["time", "-model", str(net), "-phase", "BOTH"]) == 1
    assert capsys.readouterr().err == (
        'caffe-lite time: error: -phase must be "TRAIN" or "TEST", got "BOTH"\n')


@pytest.mark.parametrize("name, value", [("GLOG_minloglevel", "4"),
                                         ("GLOG_minloglevel", "info"),
                                         ("GLOG_logtostderr", "maybe")])
def test_bad_glog_variable_is_one_line(net, capsys, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert cli.main(["time", "-model", str(net)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"caffe-lite time: error: {name} ")
    assert f"'{value}'" in err


def test_log_dir_gets_glogs_file(net, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    monkeypatch.setenv("GLOG_log_dir", str(folder))
    assert cli.main(["time", "-model", str(net), "-iterations", "1", "-gpu", "0"]) == 0
    err = capsys.readouterr().err
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and "caffe-lite.INFO" in files
    name = next(f for f in files if f != "caffe-lite.INFO")
    assert re.fullmatch(r"caffe-lite\.[^.]+.*\.[^.]+\.log\.INFO\.\d{8}-\d{6}\.\d+", name)
    assert name.endswith(f".{os.getpid()}")
    assert os.readlink(folder / "caffe-lite.INFO") == name
    text = (folder / name).read_text()
    header, body = text.split("\n", 3)[:3], text.split("\n", 3)[3]
    assert header[0].startswith("Log file created at: ")
    assert header[2] == "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg"
    # the same lines as stderr (Caffe's tools log to both)
    assert glog_messages(body) == glog_messages(err) and "Total Time" in body
    assert len(glog_messages(body, "W")) == 1


def test_logtostderr_writes_no_file(net, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_log_dir", str(tmp_path / "logs"))
    monkeypatch.setenv("GLOG_logtostderr", "1")
    assert cli.main(["time", "-model", str(net), "-iterations", "1"]) == 0
    assert "Total Time" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_missing_log_dir_is_one_line(net, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_log_dir", str(tmp_path / "nowhere"))
    assert cli.main(["time", "-model", str(net)]) == 1
    assert capsys.readouterr().err == (
        f"caffe-lite time: error: {tmp_path / 'nowhere'}: GLOG_log_dir: no such directory\n")


def test_log_file_name_is_glogs():
    import datetime
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    name = log_file_name(when, 42)
    assert name.startswith("caffe-lite.") and name.endswith(".log.INFO.20240102-030405.42")
