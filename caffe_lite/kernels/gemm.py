"""GEMM helpers over NumPy's BLAS: accumulation, per-thread workspaces, and the batch split
that runs lowered layers on all cores with single-threaded GEMMs.

NumPy's matmul has no beta, so C += A @ B (Caffe's gemm with beta 1, how parameter
gradients accumulate) goes through a scratch product and an add; the add is a small
fraction of the product. SciPy's BLAS has beta, but it links a second OpenBLAS whose thread
pool fights NumPy's for the cores (measured 10x slower when the two alternate).

`split_batch(n, work)` runs work(worker, start, stop) on contiguous slices of a batch, one
slice per thread of caffe-lite's thread count (caffe_lite/threads.py), each in its own OS
thread with OpenBLAS switched to one thread for the duration. Each worker then does its own
im2col, GEMM and transposes back to back in its own cache, and the whole layer has ONE
fork/join instead of one per kernel and per GEMM. That matters on a shared 2-core machine:
whenever another process holds a core, every fork/join waits for a descheduled thread (a
scheduler tick, several ms), and a lowered convolution with per-kernel parallelism has dozens
of them per pass. Measured with a busy-loop process on one of the two cores, cifar10_quick's
conv2 forward + backward: 87 ms split this way, 710 ms with OpenBLAS's own two threads; on
an idle machine the two are within noise of each other.

OpenBLAS's own threads must stay idle during a net pass: after a multi-threaded call they
spin for OPENBLAS_THREAD_TIMEOUT (2^28 cycles, about 0.1 s, unless that variable was set
before NumPy loaded OpenBLAS), holding a core that the next layer's workers need. Measured
on cifar10_quick after InnerProduct ran on two OpenBLAS threads: conv2's backward 43 ms
instead of 20. So `blas_single_threaded()` (threads.py) switches OpenBLAS to one thread for
a whole net pass (Net and Solver enter it) and gives the user's count back after it,
`split_batch` runs inside it, and the products that are not lowered convolutions split over
the cores with `parallel_matmul`.
"""
import math

import numpy as np

from .. import threads
from ..threads import ForkSafeRLock, blas_single_threaded


class Workspace:
    """Grow-only scratch buffers, one per (name, dtype); a net runs one layer at a time."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        return self.flat(name, math.prod(shape), np.dtype(dtype)).reshape(shape)

    def flat(self, name, size, dtype):
        """get's buffer as a 1-d view of `size` elements; `dtype` a np.dtype (the forward of
        the tiles asks for two per worker at every call)."""
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype)
            self._buffers[(name, dtype)] = buf
        return buf[:size]

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


def _blas_writable(out):
    """Whether BLAS writes a 2-d `out` in place: unit stride along rows and a row stride it
    can take as ldc (a column slice of a C-contiguous matrix is one); NumPy's matmul would
    otherwise go through a copy of its own."""
    item = out.itemsize
    return out.ndim == 2 and out.strides[1] == item and out.strides[0] >= out.shape[1] * item \
        and out.strides[0] % item == 0


# --- the batch split ----------------------------------------------------------------------

#: split_batch calls take turns process-wide: worker i's workspace is shared by every call
_RUN_LOCK = ForkSafeRLock()


def batch_workers():
    """How many slices split_batch makes: caffe-lite's thread count (threads.py)."""
    return threads.get_num_threads()


#: a batch of one with fewer multiply-adds keeps OpenBLAS on one thread: waking its other
#: threads costs more than they save (LeNet's conv2 at batch 1, 1.6 M: 0.12 ms on one
#: thread, 0.2 ms on two)
ONE_IMAGE_BLAS_MIN_MACS = 1 << 23


def split_batch(n, work, workers=None, macs=None):
    """Run work(worker, start, stop) over [0, n) split into contiguous slices.

    Slices run at the same time with OpenBLAS on one thread each; worker 0 is the calling
    thread. With one worker (one thread, or a batch of one), work runs once over the whole
    range with OpenBLAS on caffe-lite's thread count, so that a batch of one still uses
    every core inside its GEMMs, unless `macs` (the work's multiply-adds) is below
    ONE_IMAGE_BLAS_MIN_MACS. Returns the list of results in worker order.
    """
    with _RUN_LOCK:
        if workers is None:
            workers = batch_workers()
        workers = min(workers, n)
        if workers <= 1:
            small = macs is not None and macs < ONE_IMAGE_BLAS_MIN_MACS
            with threads.blas_threads(1 if small else threads.get_num_threads()):
                return [work(0, 0, n)]
        bounds = [n * i // workers for i in range(workers + 1)]
        workspace(workers - 1)              # create the workers' workspaces here, not racing
        with blas_single_threaded():
            return threads.run_parallel(work, [(i, bounds[i], bounds[i + 1])
                                               for i in range(workers)])


#: products of fewer multiply-adds run on the calling thread: below this a fork/join
#: (0.08-0.1 ms on these VMs) costs more than the second core saves (cifar10_quick's ip1,
#: 6.5 M multiply-adds: forward + backward 0.89 ms split, 0.55 ms on one thread)
SPLIT_MIN_MACS = 1 << 23
#: a product of one row (an InnerProduct at batch 1) from this many multiply-adds splits:
#: it streams the weight once, and two cores stream it faster than one
ONE_ROW_SPLIT_MIN_MACS = 1 << 19


def parallel_matmul(a, b, out, accumulate=False):
    """out = a @ b, or out += a @ b with accumulate, for 2-d a (m, k) and b (k, n)
    (transposed views allowed): split over the rows or the columns of out, whichever is
    longer, one single-threaded GEMM per core.

    Each element of out is one worker's dot product over the whole of k: no partial sums
    from different workers are added. The order of the terms inside that dot product is
    the BLAS kernel's, which depends on the slice's shape and the CPU (blocking, micro-
    kernel, FMA), so out matches a single a @ b to rounding (about k * eps * |a| |b| per
    element), not bit for bit."""
    m, n = out.shape
    rows = m >= n
    macs = m * n * a.shape[1]
    if m == 1 and macs >= ONE_ROW_SPLIT_MIN_MACS:
        def row_work(worker, start, stop):
            _row_into(a[0], b[:, start:stop], out[0, start:stop], accumulate,
                      workspace(worker))
        split_batch(n, row_work)
        return out
    if macs < SPLIT_MIN_MACS:
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


def _row_into(x, b, out, accumulate, ws):
    """out = x @ b (or +=) for one row x (k,): as b.T @ x, a matrix-vector product that
    NumPy's dot runs with the GIL released (its matmul of one row keeps the GIL, so two
    workers took turns: no faster than one)."""
    if not accumulate and out.flags.c_contiguous:
        np.dot(b.T, x, out=out)
        return
    part = ws.get("matmul_part", out.shape, out.dtype)
    np.dot(b.T, x, out=part)
    _store(part, out, accumulate)


#: a product of fewer rows than this fraction of its columns, by a transposed matrix, runs
#: as (b.T @ a.T).T (_matmul_into)
FEW_ROWS = 0.25


def _matmul_into(a, b, out, accumulate, ws):
    m, n = out.shape
    if 2 <= m <= FEW_ROWS * n and b.T.flags.c_contiguous:
        # OpenBLAS runs a few rows by a transposed matrix (an InnerProduct's x @ W.T) as
        # W @ x.T 1.3-1.9x faster (one thread: CaffeNet's fc6-fc8 at batch 16, 4096 x
        # 512 at batch 8); the product's transpose is then copied, m * n floats
        part = ws.get("matmul_part_t", (n, m), out.dtype)
        np.matmul(b.T, a.T, out=part)
        _store(part.T, out, accumulate)
        return
    if not accumulate and _blas_writable(out):
        np.matmul(a, b, out=out)
        return
    part = ws.get("matmul_part", out.shape, out.dtype)
    np.matmul(a, b, out=part)
    _store(part, out, accumulate)


def _store(part, out, accumulate):
    """out = part, or out += part."""
    if accumulate:
        out += part
    else:
        out[...] = part
