import logging
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(TESTS))
# The suite's `caffe-lite train` subprocesses run without the compile-ahead helper (each new
# net would start one); tests/test_compile_ahead.py turns it on where it tests it.
os.environ.setdefault("CAFFE_LITE_COMPILE_AHEAD", "0")


@pytest.fixture
def shared():
    """../shared beside the checkout; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture
def caffe_log_records():
    """caffe_log_records(level) -> a function giving the caffe_lite logger's messages of
    exactly that level since the call, for the rest of the test."""
    installed = []

    def watch(level):
        records = []
        handler = logging.Handler(level)
        handler.emit = records.append
        log = logging.getLogger("caffe_lite")
        installed.append((log, handler, log.level))
        log.addHandler(handler)
        log.setLevel(level)
        return lambda: [r.getMessage() for r in records if r.levelno == level]

    yield watch
    for log, handler, level in reversed(installed):
        log.removeHandler(handler)
        log.setLevel(level)


@pytest.fixture
def restore_glog():
    """cli.main points the glog handler at the test's stderr; put the old one back after."""
    from caffe_lite.log import LOG
    saved = (list(LOG.handlers), LOG.level, LOG.propagate)
    yield
    LOG.handlers[:], LOG.level, LOG.propagate = saved[0], saved[1], saved[2]
