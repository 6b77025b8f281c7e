"""Our training log, read as Caffe's tools/extra/parse_log.py reads it.

The regexes below are parse_log.py's and extract_seconds.py's, written out here so the test
does not depend on caffe_lite.log_parse; that module is then checked to give the same rows.
The progress bar must never reach a redirected log, and must appear on a terminal.
"""
import datetime
import io
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

from caffe_lite import cli
from caffe_lite.log_parse import parse_log
from test_solver_features import DUMMY_DATA, write_case


pytestmark = pytest.mark.usefixtures("restore_glog")

ROOT = Path(__file__).resolve().parent.parent

regex_iteration = re.compile(r'Iteration (\d+)')
regex_train_output = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+)')
regex_test_output = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+)')
regex_learning_rate = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')
GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def extract_datetime_from_line(line, year):
    line = line.strip().split()
    month = int(line[0][1:3])
    day = int(line[0][3:])
    timestamp = line[1]
    pos = timestamp.rfind('.')
    ts = [int(x) for x in timestamp[:pos].split(':')]
    return datetime.datetime(year, month, day, ts[0], ts[1], ts[2], int(timestamp[pos + 1:]))


def caffe_parse_log(path):
    """parse_log.py's parse_log, as in BVLC Caffe."""
    year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
    with open(path) as f:
        start_time = None
        for line in f:
            if line.strip().find('Solving') != -1:
                start_time = extract_datetime_from_line(line.strip(), year)
                break
        iteration, learning_rate = -1, float('NaN')
        train_list, test_list, train_row, test_row = [], [], None, None
        for line in f:
            m = regex_iteration.search(line)
            if m:
                iteration = float(m.group(1))
            if iteration == -1:
                continue
            seconds = (extract_datetime_from_line(line, year) - start_time).total_seconds()
            m = regex_learning_rate.search(line)
            if m:
                learning_rate = float(m.group(1))
            train_list, train_row = _row(regex_train_output, train_row, train_list, line,
                                         iteration, seconds, learning_rate)
            test_list, test_row = _row(regex_test_output, test_row, test_list, line,
                                       iteration, seconds, learning_rate)
    for rows in (train_list, test_list):
        if len(rows) > 1:
            rows[0]['LearningRate'] = rows[1]['LearningRate']
    return train_list, test_list


def _row(regex, row, rows, line, iteration, seconds, learning_rate):
    m = regex.search(line)
    if m:
        if not row or row['NumIters'] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([('NumIters', iteration), ('Seconds', seconds),
                               ('LearningRate', learning_rate)])
        row[m.group(2)] = float(m.group(3))
    if row and len(rows) >= 1 and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return rows, row


@pytest.fixture(scope="module")
def train_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("log")
    write_case(folder, DUMMY_DATA, max_iter=12, display=2, test_interval=4,
               lr_policy='"multistep"', stepvalue=None, stepsize=None)
    text = (folder / "solver.prototxt").read_text() + "stepvalue: 5\nstepvalue: 9\n"
    (folder / "solver.prototxt").write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(folder / "train.log", "w") as log:
        rc = subprocess.call([sys.executable, "-m", "caffe_lite", "train", "-solver",
                              "solver.prototxt"], cwd=folder, stderr=log,
                             stdout=subprocess.DEVNULL, env=env)
    assert rc == 0, (folder / "train.log").read_text()
    return folder / "train.log"


def test_every_log_line_has_the_glog_prefix_or_is_a_proto_dump(train_log):
    lines = train_log.read_text().splitlines()
    glog = [ln for ln in lines if GLOG.match(ln)]
    assert len(glog) > 20
    assert not any("\r" in ln or "it/s]" in ln or "%|" in ln for ln in lines)


def test_parse_log_reads_our_log(train_log):
    train, test = caffe_parse_log(train_log)
    # the final "Iteration 12, loss = L" has no output lines, as in Caffe
    assert [r["NumIters"] for r in train] == [0, 2, 4, 6, 8, 10]
    assert all(set(r) == {"NumIters", "Seconds", "LearningRate", "loss"} for r in train)
    # parse_log.py's lag: "lr =" of iteration k is logged after k's outputs
    assert [r["LearningRate"] for r in train] == [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]
    assert all(r["Seconds"] >= 0 for r in train)
    assert [r["NumIters"] for r in test] == [0, 4, 8, 12]
    assert all(set(r) == {"NumIters", "Seconds", "LearningRate", "accuracy", "loss"}
               for r in test)


def test_log_parse_module_agrees(train_log):
    assert parse_log(train_log) == caffe_parse_log(train_log)


def test_log_lines_have_caffes_shape(train_log):
    text = train_log.read_text()
    for pattern in [r"\] Solving tiny$", r"\] Learning Rate Policy: multistep$",
                    r"\] Iteration 4, Testing net \(#0\)$",
                    r"\]     Test net output #0: accuracy = [\d.e+-]+$",
                    r"\]     Test net output #1: loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)$",
                    r"\] Iteration 2 \([\d.e+-]+ iter/s, [\d.e+-]+s/2 iters\), loss = [\d.e+-]+$",
                    r"\]     Train net output #0: loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)$",
                    r"\] Iteration 2, lr = 0.1$", r"\] MultiStep Status: Iteration 5, step = 1$",
                    r"\] Snapshotting to binary proto file .*snap_iter_12.caffemodel$",
                    r"\] Snapshotting solver state to binary proto file "
                    r".*snap_iter_12.solverstate$",
                    r"\] Optimization Done.$"]:
        assert re.search(pattern, text, re.M), pattern


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    solver = write_case(tmp_path, DUMMY_DATA, max_iter=6, display=3, test_iter=None,
                        test_interval=None)
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["train", "-solver", str(solver)]) == 0
    out = tty.getvalue()
    assert "train:" in out and "6/6" in out and "loss=" in out
    assert "Iteration 3, lr = 0.05" in out

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert cli.main(["train", "-solver", str(solver)]) == 0
    text = plain.getvalue()
    assert "Iteration 3, lr = 0.05" in text
    assert "6/6" not in text and "\r" not in text


def test_plot_command(train_log, tmp_path, capsys):
    out = tmp_path / "curves.png"
    rc = cli.main(["plot", str(train_log), "-o", str(out)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert rc == 1
        err = capsys.readouterr().err.strip()
        assert "matplotlib" in err and "caffe-lite[plot]" in err and "\n" not in err
        return
    assert rc == 0 and out.stat().st_size > 0


def test_test_command(train_log, capsys):
    folder = train_log.parent
    rc = cli.main(["test", "-model", str(folder / "net.prototxt"), "-weights",
                   str(folder / "snap_iter_12.caffemodel"), "-iterations", "3"])
    assert rc == 0
    err = capsys.readouterr().err
    assert re.search(r"\] Batch 2, accuracy = [\d.e+-]+$", err, re.M)
    assert re.search(r"\] Loss: [\d.e+-]+$", err, re.M)
    assert re.search(r"\] accuracy = [\d.e+-]+$", err, re.M)
    assert re.search(r"\] loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)$", err, re.M)
