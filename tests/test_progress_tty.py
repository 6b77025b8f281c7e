"""The progress bar on a real terminal: `caffe-lite train` and `test` run under a
pseudo-terminal and the bytes they write are rendered by the pyte terminal emulator, so the
test sees the screen a user sees. The bar must stay below clean glog lines and leave nothing
behind; a redirected log gets no bar at all.
"""
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pyte = pytest.importorskip("pyte")

ROOT = Path(__file__).resolve().parent.parent
COLS, ROWS = 120, 400        # rows enough for the whole run: pyte keeps no scrollback
GLOG_PREFIX = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")
# tqdm's bar: "train:  50%|#####     | 2/4 [00:00<00:00, 68.20iter/s, loss=0.1261]"
BAR = re.compile(r"\d+%\||\| *\d+/\d+ \[|iter/s(, loss=[^\]]*)?\]")

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.999 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.1
lr_policy: "fixed"
display: 1
max_iter: 5
test_iter: 2
test_interval: 3
random_seed: 1
snapshot_prefix: "snap"
"""
MAX_ITER = 5


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tty")
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(SOLVER)
    return folder


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLUMNS=str(COLS), LINES=str(ROWS))
    env.pop("GLOG_minloglevel", None)
    env.pop("GLOG_log_dir", None)
    return env


def run_on_terminal(argv, cwd, timeout=240):
    """(exit code, bytes) of `python -m caffe_lite ARGV` with a pseudo-terminal as its
    stdin, stdout and stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "caffe_lite", *argv], cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave, env=_env(),
                            start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:     # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), b"".join(chunks)


def render(raw):
    screen = pyte.Screen(COLS, ROWS)
    pyte.ByteStream(screen).feed(raw)
    return [line.rstrip() for line in screen.display]


def assert_clean_screen(lines):
    for line in lines:
        starts = [m.start() for m in GLOG_PREFIX.finditer(line)]
        assert starts in ([], [0]), f"glog prefix inside a line: {line!r}"
        assert not BAR.search(line), f"bar left on screen: {line!r}"


def normalized(lines):
    """Log lines with what differs between two runs (times, pids, rates) blanked."""
    text = [GLOG_PREFIX.sub("", ln).rstrip() for ln in lines if ln.strip()]
    return [re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", ln) for ln in text]


@pytest.fixture(scope="module")
def trained(case):
    """(exit code, bytes) of one `caffe-lite train` on a terminal; it leaves the snapshot."""
    return run_on_terminal(["train", "-solver", "solver.prototxt"], case)


def test_train_bar_stays_below_clean_log_lines(trained):
    rc, raw = trained
    lines = render(raw)
    assert rc == 0, "\n".join(lines)
    # the bar was drawn (else this test would prove nothing) ...
    assert b"train:" in raw and BAR.search(raw.decode("utf-8", "replace"))
    # ... and is gone, each glog line whole
    assert_clean_screen(lines)
    text = "\n".join(lines)
    for i in range(MAX_ITER):
        assert len(re.findall(rf"^I\d{{4}} .*\] Iteration {i}, lr = 0\.1$", text, re.M)) == 1
    assert len(re.findall(r"^I\d{4} .*\] Iteration 3, Testing net \(#0\)$", text, re.M)) == 1
    assert [ln for ln in lines if ln][-1].endswith("] Optimization Done.")


def test_terminal_screen_holds_the_redirected_log_lines(case, trained):
    on_screen = render(trained[1])
    proc = subprocess.run([sys.executable, "-m", "caffe_lite", "train", "-solver",
                           "solver.prototxt"], cwd=case, env=_env(), capture_output=True,
                          timeout=240)
    assert proc.returncode == 0
    log = proc.stderr.decode()
    assert "\r" not in log and "\x1b" not in log and not BAR.search(log)
    assert normalized(on_screen) == normalized(log.splitlines())


def test_test_command_bar_leaves_nothing(case, trained):
    assert trained[0] == 0
    rc, raw = run_on_terminal(["test", "-model", "net.prototxt", "-weights",
                               f"snap_iter_{MAX_ITER}.caffemodel", "-iterations", "4"], case)
    lines = render(raw)
    assert rc == 0, "\n".join(lines)
    assert b"test:" in raw and BAR.search(raw.decode("utf-8", "replace"))
    assert_clean_screen(lines)
    text = "\n".join(lines)
    for i in range(4):
        assert re.search(rf"^I\d{{4}} .*\] Batch {i}, acc = [\d.e+-]+$", text, re.M)
    assert re.search(r"^I\d{4} .*\] Loss: [\d.e+-]+$", text, re.M)
