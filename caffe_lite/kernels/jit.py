"""`kernel`: numba.njit with the options every compiled caffe-lite kernel shares.

cache=True: compiled code is kept on disk (NUMBA_CACHE_DIR or __pycache__) for the next run.
Numba takes a cached kernel as fresh while its own source file is unchanged (size and
modification time), but a kernel holds the code of the helpers it inlines from other files
(vector_tile's tiles, lane_transpose's transposes, channel_epilogue's runs, neuron's ReLU):
after `git pull` changed only a helper's file, Numba would load kernels built from the old
helper. So each kernel's cache entry also carries a stamp of every source in this package
(sources_stamp): a change to any of them recompiles every kernel on its next use, as an
upgrade by pip (which writes every file anew) does anyway.

error_model="numpy": a division or remainder by zero gives what C++ Caffe's gives (inf or nan
for floats, 0 for integers) instead of raising ZeroDivisionError. The kernels never rely on
that exception (their callers check shapes and counts first), and without a zero test and a
raise on every `/`, `//` and `%` Numba types and lowers less code: the LeNet one-iteration
train compiles 0.3-0.5 s faster on a cold cache (docs/benchmarks.md, start-up). The
arithmetic itself is unchanged.
"""
import hashlib
from functools import lru_cache
from pathlib import Path

from numba import njit

#: the sources whose code a cached kernel may hold
SOURCES = Path(__file__).resolve().parent


def sources_stamp(folder=None):
    """A digest of the name, size and modification time of every source in `folder` (None:
    SOURCES), read once per process."""
    return _stamp_of(Path(SOURCES if folder is None else folder))


@lru_cache(maxsize=None)
def _stamp_of(folder):
    digest = hashlib.sha256()
    for source in sorted(folder.glob("*.py")):
        stat = source.stat()
        digest.update(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:20]


def kernel(function=None, **options):
    """@kernel or @kernel(nogil=True, fastmath=...): njit with caffe-lite's shared options."""
    options = {"cache": True, "error_model": "numpy", **options}
    if function is None:
        return lambda f: _stamped(njit(f, **options))
    return _stamped(njit(function, **options))


def _stamped(dispatcher):
    """The dispatcher, its cache index keyed by its file's stamp and sources_stamp()."""
    try:
        index = dispatcher._cache._cache_file
        stamp = index._source_stamp
    except AttributeError:          # another Numba's internals: its own stamp alone
        return dispatcher
    index._source_stamp = (stamp, sources_stamp())
    return dispatcher
