"""glog-shaped logging, so Caffe's tools/extra/parse_log.py reads our logs unchanged.

A line looks like `I1123 00:00:00.000000 12345 solver.py:204] message`.
"""
import datetime
import logging
import os
import sys

_LEVEL_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
                 logging.ERROR: "E", logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = datetime.datetime.fromtimestamp(record.created)
        prefix = "%s%s %s %d %s:%d] " % (
            _LEVEL_LETTER.get(record.levelno, "I"), t.strftime("%m%d"),
            t.strftime("%H:%M:%S.%f"), os.getpid(), record.filename, record.lineno)
        return prefix + record.getMessage()


LOG = logging.getLogger("caffe_lite")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (tests swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(stream=None, level=logging.INFO):
    """Send glog lines to `stream` (the current stderr by default, as glog does)."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(GlogFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    return handler


# Library use (pycaffe scripts) still gets glog-shaped warnings; commands raise it to INFO.
if not LOG.handlers:
    setup_logging(level=logging.WARNING)
