"""`kernel`: numba.njit with the options every compiled caffe-lite kernel shares.

cache=True: compiled code is kept on disk (NUMBA_CACHE_DIR or __pycache__) for the next run.

error_model="numpy": a division or remainder by zero gives what C++ Caffe's gives (inf or nan
for floats, 0 for integers) instead of raising ZeroDivisionError. The kernels never rely on
that exception (their callers check shapes and counts first), and without a zero test and a
raise on every `/`, `//` and `%` Numba types and lowers less code: the LeNet one-iteration
train compiles 0.3-0.5 s faster on a cold cache (docs/benchmarks.md, start-up). The
arithmetic itself is unchanged.
"""
from numba import njit


def kernel(function=None, **options):
    """@kernel or @kernel(nogil=True, fastmath=...): njit with caffe-lite's shared options."""
    options = {"cache": True, "error_model": "numpy", **options}
    return njit(**options) if function is None else njit(function, **options)
