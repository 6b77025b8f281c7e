"""glog-shaped logging, so Caffe's tools/extra/parse_log.py reads our logs unchanged.

A line looks like `I1123 00:00:00.000000 12345 solver.py:204] message`.

Importing caffe_lite installs no handler and changes no logging state: in a user's script the
records of the `caffe_lite` logger propagate to whatever the script configured (with nothing
configured, Python's last-resort handler still prints warnings and errors).

The `caffe-lite` command calls configure_logging() once, and reads glog's environment
variables as Caffe's tools do:

  GLOG_minloglevel  0 INFO (the default), 1 WARNING, 2 ERROR, 3 FATAL: lines below it are
                    dropped everywhere.
  GLOG_logtostderr  true: stderr only, never a log file.
  GLOG_log_dir      a folder: also write glog's log file there,
                    `caffe-lite.<host>.<user>.log.INFO.<yyyymmdd-hhmmss>.<pid>`, and point the
                    symlink `caffe-lite.INFO` at it.

Caffe's tools set alsologtostderr, so every line goes to stderr as well. Unlike glog, which
falls back to /tmp, caffe-lite writes no log file unless GLOG_log_dir is set: a user who
wants the file names the folder, and a plain run leaves nothing behind.
"""
import contextlib
import datetime
import getpass
import logging
import os
import socket
import sys

from .errors import CaffeError

_LEVEL_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
                 logging.ERROR: "E", logging.CRITICAL: "F"}
# GLOG_minloglevel's values: glog's severities INFO, WARNING, ERROR, FATAL
_MIN_LEVELS = {"0": logging.INFO, "1": logging.WARNING, "2": logging.ERROR,
               "3": logging.CRITICAL}
_TRUE = ("true", "1", "yes", "t", "y")
_FALSE = ("false", "0", "no", "f", "n", "")
PROGRAM = "caffe-lite"


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
        # StreamHandler.__init__ assigns it; the live sys.stderr is always the target
        pass


def min_level_from_env(environ=os.environ):
    """GLOG_minloglevel as a logging level (INFO when unset)."""
    value = environ.get("GLOG_minloglevel", "0").strip()
    level = _MIN_LEVELS.get(value)
    if level is None:
        raise CaffeError(f"GLOG_minloglevel must be 0 (INFO), 1 (WARNING), 2 (ERROR) or "
                         f"3 (FATAL), got '{value}'")
    return level


def _env_bool(environ, name):
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CaffeError(f"{name} must be true or false, got '{environ[name]}'")


def log_file_name(now, pid):
    """glog's file name: <program>.<host>.<user>.log.INFO.<yyyymmdd-hhmmss>.<pid>."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "invalid-user"
    return (f"{PROGRAM}.{socket.gethostname()}.{user}.log.INFO."
            f"{now.strftime('%Y%m%d-%H%M%S')}.{pid}")


def _open_log_file(folder):
    if not os.path.isdir(folder):
        raise CaffeError("GLOG_log_dir: no such directory", folder)
    now = datetime.datetime.now()
    path = os.path.join(folder, log_file_name(now, os.getpid()))
    handler = logging.FileHandler(path, encoding="utf-8")
    # glog's header, written before the first line
    handler.stream.write(f"Log file created at: {now.strftime('%Y/%m/%d %H:%M:%S')}\n"
                         f"Running on machine: {socket.gethostname()}\n"
                         "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid "
                         "file:line] msg\n")
    link = os.path.join(folder, f"{PROGRAM}.INFO")
    with contextlib.suppress(OSError):
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(os.path.basename(path), link)
    return handler


def configure_logging(environ=os.environ):
    """Glog lines to stderr (and GLOG_log_dir's file) at GLOG_minloglevel, for a command.

    Handlers that an in-process caller put on the caffe_lite logger stay, and see the same
    records; propagation to the root logger stops, so no line shows twice. Returns the state
    to give restore_logging().
    """
    level = min_level_from_env(environ)
    to_stderr_only = _env_bool(environ, "GLOG_logtostderr")
    folder = environ.get("GLOG_log_dir", "")
    handlers = [_StderrHandler()]
    if folder and not to_stderr_only:
        handlers.append(_open_log_file(folder))
    saved = (list(LOG.handlers), LOG.level, LOG.propagate)
    for handler in handlers:
        handler.setFormatter(GlogFormatter())
    LOG.handlers[:] = saved[0] + handlers
    LOG.setLevel(level)
    LOG.propagate = False
    return saved


def restore_logging(saved):
    """Close what configure_logging() opened and put the earlier handlers back."""
    for handler in LOG.handlers:
        if handler not in saved[0]:
            handler.close()
    LOG.handlers[:] = saved[0]
    LOG.setLevel(saved[1])
    LOG.propagate = saved[2]
