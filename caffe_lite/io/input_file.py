"""Input files: every file caffe-lite reads is a regular file, checked before it is opened.

A FIFO, a socket or a device given as a solver, weights or prototxt would block `open` or
`read` forever (or never end), and a directory where a file is expected used to be reported
as "no such file". `file_problem` says which, in the words the error lines use; `read_input`
reads a file after that check. Databases (LMDB folders) are checked by data/db.py.
"""
import os
import stat

from ..errors import CaffeError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"))


def file_problem(path):
    """None for a regular file (or a link to one), else why `path` cannot be read as a file:
    'no such file', 'is a directory', 'is a FIFO, not a regular file', 'permission denied'."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied"
    except (OSError, ValueError) as err:
        return f"cannot read: {getattr(err, 'strerror', None) or err}"
    if stat.S_ISDIR(mode):
        return "is a directory"
    for test, kind in _KINDS:
        if test(mode):
            return f"is {kind}, not a regular file"
    return None


def read_input(path, what="file"):
    """The bytes of the regular file `path`, or a CaffeError naming it and saying why not."""
    path = os.fspath(path)
    problem = file_problem(path)
    if problem == "no such file":
        raise CaffeError(f"no such {what}", path)
    if problem == "is a directory":
        raise CaffeError(f"is a directory, not a {what}", path)
    if problem:
        raise CaffeError(problem, path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except PermissionError:
        raise CaffeError("permission denied", path) from None
    except OSError as err:
        raise CaffeError(f"cannot read: {err.strerror or err}", path) from None
