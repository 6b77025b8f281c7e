"""`caffe-lite plot` and log_parse on logs as users keep them: plain, or with a prefix per line.

A shell loop, `ts` or a CI runner puts a timestamp of its own before glog's; the rows must be
the plain log's rows. The plain log is also checked against parse_log.py itself (the oracle in
test_train_log.py).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caffe_lite.commands.plot import build_figure, plot
from caffe_lite.errors import CaffeError
from caffe_lite.log_parse import parse_log
from test_train_log import GLOG, caffe_parse_log

ROOT = Path(__file__).resolve().parent.parent

# A BVLC Caffe 1.0 LeNet log, cut down; the bare "warnings.warn" line is what a Python layer's
# warning leaves between glog lines.
PLAIN_LOG = """\
I1203 06:55:10.000000  1234 caffe.cpp:251] Starting Optimization
I1203 06:55:10.100000  1234 solver.cpp:279] Solving LeNet
I1203 06:55:10.100010  1234 solver.cpp:280] Learning Rate Policy: inv
I1203 06:55:10.100500  1234 solver.cpp:337] Iteration 0, Testing net (#0)
I1203 06:55:11.200000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.0856
I1203 06:55:11.200010  1234 solver.cpp:404]     Test net output #1: loss = 2.31237 (* 1 = 2.31237 loss)
I1203 06:55:11.210000  1234 solver.cpp:228] Iteration 0, loss = 2.29612
I1203 06:55:11.210010  1234 solver.cpp:244]     Train net output #0: loss = 2.29612 (* 1 = 2.29612 loss)
I1203 06:55:11.210020  1234 sgd_solver.cpp:106] Iteration 0, lr = 0.01
  warnings.warn("a Python layer's warning")

I1203 06:55:12.710000  1234 solver.cpp:228] Iteration 100, loss = 0.20351
I1203 06:55:12.710010  1234 solver.cpp:244]     Train net output #0: loss = 0.20351 (* 1 = 0.20351 loss)
I1203 06:55:12.710020  1234 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I1203 06:55:14.210000  1234 solver.cpp:337] Iteration 200, Testing net (#0)
I1203 06:55:15.310000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.9632
I1203 06:55:15.310010  1234 solver.cpp:404]     Test net output #1: loss = 0.118733 (* 1 = 0.118733 loss)
I1203 06:55:15.320000  1234 solver.cpp:228] Iteration 200, loss = 0.154822
I1203 06:55:15.320010  1234 solver.cpp:244]     Train net output #0: loss = 0.154822 (* 1 = 0.154822 loss)
I1203 06:55:15.320020  1234 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
I1203 06:55:16.820000  1234 solver.cpp:228] Iteration 300, loss = 0.168704
I1203 06:55:16.820010  1234 solver.cpp:244]     Train net output #0: loss = 0.168704 (* 1 = 0.168704 loss)
I1203 06:55:16.820020  1234 sgd_solver.cpp:106] Iteration 300, lr = 0.00978075
I1203 06:55:18.320000  1234 solver.cpp:454] Snapshotting to binary proto file lenet_iter_400.caffemodel
I1203 06:55:18.330000  1234 solver.cpp:317] Iteration 400, loss = 0.0977
I1203 06:55:18.330010  1234 solver.cpp:337] Iteration 400, Testing net (#0)
I1203 06:55:19.430000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.9751
I1203 06:55:19.430010  1234 solver.cpp:404]     Test net output #1: loss = 0.0801 (* 1 = 0.0801 loss)
I1203 06:55:19.430020  1234 solver.cpp:322] Optimization Done.
"""

PREFIXES = {
    "iso": lambda i: f"2026-12-03T06:55:{i % 60:02d}Z ",
    "github_actions": lambda i: f"2026-12-03T06:55:{i % 60:02d}.1234567Z ",
    "ts": lambda i: f"Dec 03 06:55:{i % 60:02d} ",
    "bracketed_clock": lambda i: f"[12:44:{i % 60:02d}] ",
}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _prefixed(prefix):
    return "".join(prefix(i) + line + "\n" for i, line in enumerate(PLAIN_LOG.splitlines()))


def test_plain_log_rows_are_parse_log_pys(tmp_path):
    # the oracle, like parse_log.py, stops at a line with no glog prefix at all
    stamped = "".join(line + "\n" for line in PLAIN_LOG.splitlines() if GLOG.match(line))
    path = _write(tmp_path, "plain.log", stamped)
    train, test = parse_log(path)
    assert (train, test) == caffe_parse_log(path)
    assert parse_log(PLAIN_LOG.splitlines(), year=2026) == parse_log(stamped.splitlines(),
                                                                     year=2026)
    assert [r["NumIters"] for r in train] == [0, 100, 200, 300]
    assert [r["loss"] for r in train] == [2.29612, 0.20351, 0.154822, 0.168704]
    # parse_log.py's lag: a row holds the "lr =" of the display before it; row 0 copies row 1
    assert [r["LearningRate"] for r in train] == [0.01, 0.01, 0.00992565, 0.00985258]
    assert [r["NumIters"] for r in test] == [0, 200, 400]
    assert [r["accuracy"] for r in test] == [0.0856, 0.9632, 0.9751]
    assert [r["loss"] for r in test] == [2.31237, 0.118733, 0.0801]
    assert train[0]["Seconds"] == pytest.approx(1.11001, abs=1e-9)
    assert test[2]["Seconds"] == pytest.approx(9.33, abs=1e-9)


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_prefixed_log_gives_the_plain_rows(prefix):
    plain = parse_log(PLAIN_LOG.splitlines(), year=2026)
    assert parse_log(_prefixed(PREFIXES[prefix]).splitlines(), year=2026) == plain
    assert len(plain[0]) == 4 and len(plain[1]) == 3


def test_log_across_new_year_counts_on(tmp_path):
    # parse_log.py moves to the next year when the month goes back
    lines = ["I1231 23:59:00.000000 1 solver.cpp:279] Solving net",
             "I1231 23:59:30.000000 1 solver.cpp:228] Iteration 0, loss = 2",
             "I1231 23:59:30.000000 1 solver.cpp:244]     Train net output #0: loss = 2",
             "I0101 00:01:00.000000 1 solver.cpp:228] Iteration 10, loss = 1",
             "I0101 00:01:00.000000 1 solver.cpp:244]     Train net output #0: loss = 1",
             "I0101 00:02:00.000000 1 solver.cpp:228] Iteration 20, loss = 1",
             "I0101 00:02:00.000000 1 solver.cpp:244]     Train net output #0: loss = 1"]
    train, _ = parse_log(lines, year=2025)
    assert [(r["NumIters"], r["Seconds"]) for r in train] == [(0, 30.0), (10, 120.0),
                                                               (20, 180.0)]


def _env():
    return dict(os.environ,
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_plot_command_on_a_prefixed_log(tmp_path):
    pytest.importorskip("matplotlib")
    log = _write(tmp_path, "train.log", _prefixed(PREFIXES["bracketed_clock"]))
    out = tmp_path / "curves.png"
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "plot", str(log), "-o", str(out)],
                         capture_output=True, text=True, env=_env())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _panel_lines(ax):
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_figure_puts_accuracy_on_its_own_axis():
    pytest.importorskip("matplotlib")
    train, test = parse_log(PLAIN_LOG.splitlines(), year=2026)
    fig = build_figure(train, test)
    train_ax, test_ax, lr_ax, accuracy_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == [
        "train net outputs", "test net outputs", "learning rate", ""]
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "loss", "learning rate", "accuracy"]
    assert lr_ax.get_xlabel() == "iteration"
    # the accuracy axis is the test panel's right axis
    assert accuracy_ax.bbox.bounds == test_ax.bbox.bounds
    assert _panel_lines(accuracy_ax) == {"accuracy": [0.0856, 0.9632, 0.9751]}
    assert _panel_lines(test_ax) == {"loss": [2.31237, 0.118733, 0.0801]}
    assert _panel_lines(train_ax) == {"loss": [2.29612, 0.20351, 0.154822, 0.168704]}
    # one colour per output name across panels
    assert train_ax.get_lines()[0].get_color() == test_ax.get_lines()[0].get_color()
    assert test_ax.get_lines()[0].get_color() != accuracy_ax.get_lines()[0].get_color()


def test_figure_without_test_rows_has_no_test_panel():
    pytest.importorskip("matplotlib")
    train, _ = parse_log(PLAIN_LOG.splitlines(), year=2026)
    fig = build_figure(train, [])
    assert [(ax.get_title(), ax.get_ylabel()) for ax in fig.axes] == [
        ("train net outputs", "loss"), ("learning rate", "learning rate")]


def test_log_stripped_of_glog_stamps_says_so(tmp_path):
    # what is left when a log goes through `cut -d' ' -f4-`
    stripped = "\n".join(line.split(" ", 4)[-1] for line in PLAIN_LOG.splitlines())
    log = _write(tmp_path, "stripped.log", stripped)
    with pytest.raises(CaffeError) as err:
        plot([str(log), "-o", str(tmp_path / "x.png")])
    message = str(err.value)
    assert message.startswith(f"{log}: no 'Solving' line with a glog stamp")
    assert "\n" not in message and not (tmp_path / "x.png").exists()


def test_log_without_outputs_says_so(tmp_path):
    log = _write(tmp_path, "net.log", PLAIN_LOG.split("I1203 06:55:10.100500")[0])
    with pytest.raises(CaffeError, match=r"no 'Train net output' or 'Test net output' lines"):
        plot([str(log)])
