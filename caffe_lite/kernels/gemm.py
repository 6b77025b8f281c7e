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

OpenBLAS's own threads must stay idle during a net pass: after a multi-threaded call they
spin for OPENBLAS_THREAD_TIMEOUT (2^28 cycles, about 0.1 s, unless that variable was set
before NumPy loaded OpenBLAS), holding a core that the next layer's workers need. Measured
on cifar10_quick after InnerProduct ran on two OpenBLAS threads: conv2's backward 43 ms
instead of 20. So `blas_single_threaded()` switches OpenBLAS to one thread for a whole net
pass (Net and Solver enter it), `split_batch` runs inside it, and the products that are not
lowered convolutions split over the cores with `parallel_matmul`.
"""
import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

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


_SCOPE_LOCK = threading.Lock()
_scope_depth = 0
_scope_threads = 1      # OpenBLAS's thread count when the outermost scope was entered


@contextmanager
def blas_single_threaded():
    """OpenBLAS on one thread inside, its previous thread count restored on leaving.

    Re-entrant and shared by all Python threads: the count is saved when the first one
    enters and restored when the last one leaves. `batch_workers()` inside still answers
    the saved count, so the work is split over as many cores as OpenBLAS would have used.
    """
    global _scope_depth, _scope_threads
    blas = _blas()
    with _SCOPE_LOCK:
        if _scope_depth == 0 and blas:
            _scope_threads = max(1, int(blas[0]()))
            blas[1](1)
        _scope_depth += 1
    try:
        yield
    finally:
        with _SCOPE_LOCK:
            _scope_depth -= 1
            if _scope_depth == 0 and blas:
                blas[1](_scope_threads)


def batch_workers():
    """How many slices split_batch makes: OpenBLAS's thread count outside any
    blas_single_threaded scope (1 if OpenBLAS is not found)."""
    blas = _blas()
    if not blas:
        return 1
    with _SCOPE_LOCK:
        return _scope_threads if _scope_depth else max(1, int(blas[0]()))


def split_batch(n, work, workers=None):
    """Run work(worker, start, stop) over [0, n) split into contiguous slices.

    Slices run in parallel with OpenBLAS on one thread each; worker 0 is the calling thread.
    With one worker (one core, a batch of one, or OpenBLAS not found), work runs once over
    the whole range with OpenBLAS on all its threads, so that a batch of one still uses
    every core inside its GEMMs. Returns the list of results in worker order. Calls are
    serialized process-wide: the workers' workspaces are shared, so two threads running
    layers at once take turns.
    """
    with _RUN_LOCK:
        if workers is None:
            workers = batch_workers()
        workers = min(workers, n)
        if workers <= 1:
            return [_run_whole(n, work)]
        with blas_single_threaded():
            return _run_split(n, work, workers)


def _run_whole(n, work):
    blas = _blas()
    threads = batch_workers()
    if not blas or threads <= 1 or int(blas[0]()) == threads:
        return work(0, 0, n)
    blas[1](threads)
    try:
        return work(0, 0, n)
    finally:
        blas[1](1)


def _run_split(n, work, workers):
    global _POOL, _POOL_KEY
    bounds = [n * i // workers for i in range(workers + 1)]
    workspace(workers - 1)                  # create the workers' workspaces here, not racing
    if _POOL is None or _POOL_KEY[0] != os.getpid() or _POOL_KEY[1] < workers - 1:
        _POOL = ThreadPoolExecutor(max_workers=workers - 1,
                                   thread_name_prefix="caffe-lite-batch")
        _POOL_KEY = (os.getpid(), workers - 1)
    old_switch = sys.getswitchinterval()
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


#: products of fewer multiply-adds run on the calling thread: below this a fork/join
#: (tens of microseconds) costs more than the second core saves
SPLIT_MIN_MACS = 1 << 20


def parallel_matmul(a, b, out, accumulate=False):
    """out = a @ b, or out += a @ b with accumulate, for 2-d a (m, k) and b (k, n)
    (transposed views allowed): split over the rows or the columns of out, whichever is
    longer, one single-threaded GEMM per core. Each element of out is one worker's dot
    product, so no sums are reordered across workers."""
    m, n = out.shape
    rows = m >= n
    if m * n * a.shape[1] < SPLIT_MIN_MACS:
        with blas_single_threaded():
            _matmul_into(a, b, out, accumulate, WORKSPACE)
        return out

    def work(worker, start, stop):
        if rows:
            _matmul_into(a[start:stop], b, out[start:stop], accumulate, workspace(worker))
        else:
            _matmul_into(a, b[:, start:stop], out[:, start:stop], accumulate,
                         workspace(worker))

    split_batch(m if rows else n, work)
    return out


def _matmul_into(a, b, out, accumulate, ws):
    if not accumulate and out.flags.c_contiguous:
        np.matmul(a, b, out=out)
        return
    part = ws.get("matmul_part", out.shape, out.dtype)
    np.matmul(a, b, out=part)
    if accumulate:
        out += part
    else:
        out[...] = part
