"""Write files so that a reader never sees half of one: temp file in the same folder + rename.

A crash or an error while writing leaves the old file (or none) in place, never a truncated
`.caffemodel`; the temp file is removed on failure. The new file gets the old file's mode, or
the mode the umask gives a fresh file, as Caffe's plain `ofstream` would.
"""
import contextlib
import os
import tempfile

from ..errors import CaffeError


def _target_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on a clean exit it replaces `path` in one rename.

    For writers that need a file name rather than bytes (h5py).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CaffeError("is a directory, cannot write a file there", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as err:
        raise CaffeError(f"cannot write: {err.strerror}", path) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise CaffeError(f"cannot write: {err.strerror}", path) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path, data: bytes):
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
