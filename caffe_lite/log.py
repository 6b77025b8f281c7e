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


def setup_logging(stream=None, level=logging.INFO):
    """Send glog lines to `stream` (stderr by default, as glog does)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(GlogFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    return handler


# Library use (pycaffe scripts) still gets glog-shaped warnings; commands raise it to INFO.
if not LOG.handlers:
    setup_logging(level=logging.WARNING)
