"""Inputs must be regular files (issue #16): a FIFO given where a file is read used to block
forever, and a directory given as weights was reported as "no such file". Each command runs
as a user runs it, in a subprocess with a timeout, so a hang fails the test instead of CI."""
import os
import subprocess
import sys

import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.io.input_file import file_problem, read_input

NET = ('name: "n"\nlayer { name: "d" type: "Input" top: "x" '
       'input_param { shape { dim: 1 dim: 2 } } }\n')


def caffe_lite(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "caffe_lite", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def error_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("caffe-lite")]


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_file_problem_names_each_kind(tmp_path, fifo):
    (tmp_path / "f").write_text("x")
    assert file_problem(tmp_path / "f") is None
    assert file_problem(tmp_path / "missing") == "no such file"
    assert file_problem(tmp_path) == "is a directory"
    assert file_problem(fifo) == "is a FIFO, not a regular file"
    with pytest.raises(CaffeError, match="pipe: is a FIFO, not a regular file"):
        read_input(fifo)


@pytest.mark.parametrize("argv, flag", [
    (["train", "-solver", "{fifo}"], "-solver"),
    (["upgrade_net_proto_text", "{fifo}", "out.prototxt"], None),
    (["test", "-model", "net.prototxt", "-weights", "{fifo}"], "-weights"),
    (["time", "-model", "{fifo}", "-iterations", "1"], "-model"),
])
def test_a_fifo_is_refused_in_one_line(tmp_path, fifo, argv, flag):
    (tmp_path / "net.prototxt").write_text(NET)
    proc = caffe_lite(*[a.format(fifo=fifo) for a in argv], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "is a FIFO, not a regular file" in lines[0], proc.stderr
    assert str(fifo) in lines[0] or "pipe" in lines[0]


def test_a_directory_as_weights_says_so(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "models").mkdir()
    proc = caffe_lite("test", "-model", "net.prototxt", "-weights", "models", "-iterations", "1",
                      cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "is a directory" in lines[0] and "no such" not in lines[0], \
        proc.stderr
