"""GEMM helpers over NumPy's BLAS: accumulation, per-thread workspaces, and the batch split
that runs lowered layers on all cores with single-threaded GEMMs.

NumPy's matmul has no beta, so C += A @ B (Caffe's gemm with beta 1, how parameter
gradients accumulate) goes through a scratch product and an add; the add is a small
fraction of the product. SciPy's BLAS has beta, but it links a second OpenBLAS whose thread
pool fights NumPy's for the cores (measured 10x slower when the two alternate).

`split_batch(n, work)` runs work(worker, start, stop) on contiguous slices of a batch, one
slice per BLAS thread, each in its own OS thread with OpenBLAS switched to one thread for
the duration. Each worker then does its own im2col, GEMM and transposes back to back in its
own cache, and the whole layer has ONE fork/join instead of one per kernel and per GEMM.
That matters on a shared 2-core machine: whenever another process holds a core, every
fork/join waits for a descheduled thread (a scheduler tick, several ms), and a lowered
convolution with per-kernel parallelism has dozens of them per pass. Measured with a
busy-loop process on one of the two cores, cifar10_quick's conv2 forward + backward:
87 ms split this way, 710 ms with OpenBLAS's own two threads; on an idle machine the two
are within noise of each other.
"""
import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Workspace:
    """Grow-only scratch buffers, one per (name, dtype); a net runs one layer at a time."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype)
            self._buffers[(name, dtype)] = buf
        return buf[:size].reshape(shape)

    def zeros(self, name, shape, dtype):
        out = self.get(name, shape, dtype)
        out[...] = 0
        return out

    def release(self):
        self._buffers.clear()

    @property
    def nbytes(self):
        return sum(b.nbytes for b in self._buffers.values())


#: the main thread's workspace (worker 0); workers 1.. get their own
WORKSPACE = Workspace()
_WORKSPACES = [WORKSPACE]


def workspace(worker):
    while len(_WORKSPACES) <= worker:
        _WORKSPACES.append(Workspace())
    return _WORKSPACES[worker]


def workspace_nbytes():
    return sum(ws.nbytes for ws in _WORKSPACES)


def matmul_acc(a, b, out, ws=WORKSPACE):
    """out += a @ b (a, b may be transposed views; stacked operands allowed)."""
    part = ws.get("matmul_acc", out.shape, out.dtype)
    np.matmul(a, b, out=part)
    out += part
    return out


# --- OpenBLAS thread control ---------------------------------------------------------------

def _find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy uses, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    names = (os.path.basename(p).lower() for p in paths)
    paths = sorted((p for p, name in zip(paths, names)
                    if "openblas" in name and ".so" in name),
                   key=lambda p: "numpy" not in p)      # NumPy's own copy first
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


#: the GIL switch interval while workers run (CPython's default is 5 ms): a worker coming
#: back from a GIL-free kernel waits for the GIL up to this long, and such waits showed up
#: as 4-5 ms stalls in a 20 ms convolution pass
SWITCH_INTERVAL = 0.0005

_BLAS = None
_BLAS_SEARCHED = False
_POOL = None
_POOL_KEY = None        # (pid, size): a forked child must not reuse its parent's threads
_RUN_LOCK = threading.RLock()


def _blas():
    global _BLAS, _BLAS_SEARCHED
    if not _BLAS_SEARCHED:
        np.dot(np.ones((2, 2)), np.ones((2, 2)))       # make sure BLAS is loaded
        _BLAS = _find_openblas()
        _BLAS_SEARCHED = True
    return _BLAS


def batch_workers():
    """How many slices split_batch makes: OpenBLAS's thread count (1 if unknown)."""
    blas = _blas()
    return max(1, int(blas[0]())) if blas else 1


def split_batch(n, work, workers=None):
    """Run work(worker, start, stop) over [0, n) split into contiguous slices.

    Slices run in parallel with OpenBLAS on one thread each; worker 0 is the calling thread.
    With one worker (one BLAS thread, a batch of one, or OpenBLAS not found), work runs
    once over the whole range with BLAS as configured. Returns the list of results in
    worker order. Calls are serialized process-wide: the workers' workspaces are shared, so
    two threads running layers at once take turns.
    """
    with _RUN_LOCK:
        blas = _blas()
        if workers is None:
            workers = batch_workers()
        workers = min(workers, n)
        if workers <= 1:
            return [work(0, 0, n)]
        return _run_split(n, work, workers, blas)


def _run_split(n, work, workers, blas):
    global _POOL, _POOL_KEY
    bounds = [n * i // workers for i in range(workers + 1)]
    workspace(workers - 1)                  # create the workers' workspaces here, not racing
    if _POOL is None or _POOL_KEY[0] != os.getpid() or _POOL_KEY[1] < workers - 1:
        _POOL = ThreadPoolExecutor(max_workers=workers - 1,
                                   thread_name_prefix="caffe-lite-batch")
        _POOL_KEY = (os.getpid(), workers - 1)
    get, put = blas if blas else (lambda: 1, lambda count: None)
    old = get()
    old_switch = sys.getswitchinterval()
    put(1)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        futures = [_POOL.submit(work, i, bounds[i], bounds[i + 1])
                   for i in range(1, workers)]
        try:
            first = work(0, bounds[0], bounds[1])
        except BaseException:
            for f in futures:           # never leave a worker writing after we return
                f.exception()
            raise
        return [first] + [f.result() for f in futures]
    finally:
        sys.setswitchinterval(old_switch)
        put(old)
