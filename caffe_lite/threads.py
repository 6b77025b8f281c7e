"""caffe-lite's threads: one thread count, one worker pool, and the process settings a net
pass borrows (OpenBLAS's thread count, the GIL switch interval) and gives back.

Thread count: `set_num_threads(n)`, else CAFFE_LITE_NUM_THREADS read at first use, else the
cores this process may run on. Every parallel kernel splits into at most that many parts:
lowered convolutions and products (kernels/gemm.py: split_batch, parallel_matmul) and the
element-wise and per-channel kernels (kernels/neuron.py: elementwise, split_range).

Pool: `run_parallel` runs the first part on the calling thread and the others on the pool's
worker threads, made at first use, each handed its part and waited for with two locks of its
own (`_Worker`); both sides poll for up to SPIN_SECONDS before they sleep on a lock
(kernels/spin_wait.py says why). A part that finds no idle worker (another Python thread
holds them) runs on the calling thread. A forked child drops the parent's pool and locks
(os.fork keeps only the forking thread, so the pool's workers are gone, and a lock one of
them held at the fork would never be released: the next parallel kernel would wait forever).
A part that itself calls run_parallel runs its parts inline: the pool's workers may all be
busy with the outer parts, so waiting on them from inside one could deadlock.

Borrowed settings: importing caffe-lite changes nothing a user's script can see. A net pass
keeps OpenBLAS on one thread (`blas_single_threaded`) and parallel runs lower the GIL switch
interval; the first caller saves the user's value and the last one restores it, whatever
the number of Python threads inside. The caffe-lite command configures its own process
once (`configure_command_process`).
"""
import ctypes
import operator
import os
import sys
import threading
import weakref
from contextlib import contextmanager

from .errors import CaffeError

ENV_NUM_THREADS = "CAFFE_LITE_NUM_THREADS"
ENV_SPIN = "CAFFE_LITE_SPIN_US"

#: the GIL switch interval while parts run (CPython's default is 5 ms): a worker coming back
#: from a GIL-free kernel waits for the GIL up to this long, and such waits showed up as
#: 4-5 ms stalls in a 20 ms convolution pass
SWITCH_INTERVAL = 0.0005
#: how long a worker polls for its next part after finishing one, and the caller for a
#: worker's result, before sleeping on a lock (CAFFE_LITE_SPIN_US overrides it; 0: never
#: poll). A pass's parallel kernels mostly come less than 1 ms apart; OpenMP runtimes poll
#: for a similar while
SPIN_SECONDS = 0.001
#: how long a worker that has seen its part handed over polls on before it takes the GIL:
#: the caller holds the GIL until it enters its own part a few microseconds later, and a
#: thread that finds the GIL held sleeps on it (and pays the wake-up the polling avoids)
GIL_GRACE_SECONDS = 5e-6

_num_threads = None             # None until set_num_threads or the first get_num_threads
_free = []                      # idle pool workers (_Worker)
_made = 0                       # workers this process has made
_pool_pid = None
_pool_lock = threading.Lock()
_local = threading.local()      # .nested: this thread is running one part of a parallel run


# --- the thread count --------------------------------------------------------------------

def set_num_threads(n):
    """Use at most `n` threads (the calling one included) in every parallel kernel."""
    global _num_threads
    _num_threads = _checked_count(n, "set_num_threads")


def get_num_threads():
    """The thread count: set_num_threads, else CAFFE_LITE_NUM_THREADS, else the cores
    this process may run on (its CPU affinity)."""
    global _num_threads
    if _num_threads is None:
        text = os.environ.get(ENV_NUM_THREADS, "").strip()
        _num_threads = (_checked_count(text, f"{ENV_NUM_THREADS}={text!r}") if text
                        else _usable_cores())
    return _num_threads


def _checked_count(value, where):
    if isinstance(value, str):
        count = int(value) if value.isdigit() else None
    else:
        try:
            count = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            count = None
    if count is None or count < 1:
        raise CaffeError(f"{where}: the thread count must be a whole number >= 1, "
                         f"got {value!r}")
    return count


def _usable_cores():
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# --- the pool ----------------------------------------------------------------------------

def run_parallel(fn, parts):
    """[fn(*args) for args in parts], the first on the calling thread and the others on the
    pool's workers, at the same time (parts beyond the free workers run on the calling
    thread too: another thread of the process may hold some). Every part finishes before
    this returns, even when one raises or a signal interrupts the wait (a part still
    writing after we return would corrupt the caller's arrays); then the first error in
    part order is raised."""
    if len(parts) < 2 or getattr(_local, "nested", False):
        return [fn(*args) for args in parts]
    with SWITCH.borrowed(SWITCH_INTERVAL):
        workers = _take_workers(len(parts) - 1)
        for worker, args in zip(workers, parts[1:]):
            worker.start(fn, args)
        inline = [0] + list(range(len(workers) + 1, len(parts)))
        results, errors = [None] * len(parts), [None] * len(parts)
        _local.nested = True
        try:
            for i in inline:
                try:
                    results[i] = fn(*parts[i])
                except Exception as error:     # raised in part order, below
                    errors[i] = error
        finally:
            _local.nested = False
            _finish(workers, results, errors)
        for error in errors:
            if error is not None:
                raise error
        return results


class _Worker:
    """A pool thread that runs one part at a time: handed over and waited for with two
    locks. A ThreadPoolExecutor's futures cost 55-90 us per parallel call here against
    3-8 us for the locks, paid by every parallel kernel of every layer.

    Before sleeping on a lock, the worker polls `_words[HANDED]` for its next part and the
    caller polls `_words[FINISHED]` for the result (_Polling). The locks stay the truth:
    each part is one release of `_go` and one of `_done`, and polling only means the
    matching acquire finds the lock already released."""
    HANDED, FINISHED = 0, 1

    def __init__(self, index):
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._task = self.result = self.error = None
        self._polling = _Polling.make()
        self._handed = 0
        self._words = self._polling.words() if self._polling else None
        threading.Thread(target=self._loop, name=f"caffe-lite-{index}", daemon=True).start()

    def start(self, fn, args):
        self._task = (fn, args)
        self._handed += 1
        if self._polling:
            self._words[self.HANDED] = self._handed
        self._go.release()

    def wait(self):
        """(result, error) of the part, once it has finished; a signal's exception raised
        while waiting is returned as the third item after the wait is over."""
        if self._polling:
            self._polling.caller_waits(self._words, self.FINISHED, self._handed - 1)
        interrupted = None
        while True:
            try:
                self._done.acquire()
                break
            except BaseException as error:      # KeyboardInterrupt: the part still runs
                interrupted = interrupted or error
        result, error = self.result, self.error
        self.result = self.error = None
        return result, error, interrupted

    def _loop(self):
        _local.nested = True
        seen = 0
        while True:
            if self._polling:
                # publishes the part before as finished (without the GIL, so the caller
                # that sees it can take the GIL at once), then polls for the next one
                self._polling.worker_waits(self._words, self.FINISHED, seen, self.HANDED, seen)
            self._go.acquire()
            seen = int(self._words[self.HANDED]) if self._polling else 0
            fn, args = self._task
            self._task = None
            try:
                self.result = fn(*args)
            except BaseException as error:
                self.error = error
            self._done.release()


class _Polling:
    """The pool's polling settings, in time stamp counter ticks, and the waits that use
    them (kernels/spin_wait.py)."""

    def __init__(self, wait_for_change, budget, grace):
        self._wait, self._budget, self._grace = wait_for_change, budget, grace

    @staticmethod
    def make():
        """A _Polling, or None where polling is off (CAFFE_LITE_SPIN_US=0, not x86-64)."""
        text = os.environ.get(ENV_SPIN, "").strip()
        if text:
            if not text.isdigit():
                raise CaffeError(f"{ENV_SPIN}={text!r}: microseconds, a whole number >= 0")
            seconds = int(text) * 1e-6
        else:
            seconds = SPIN_SECONDS
        if seconds <= 0:
            return None
        from .kernels import spin_wait
        if not spin_wait.available():
            return None
        budget, grace = spin_wait.ticks(seconds), spin_wait.ticks(GIL_GRACE_SECONDS)
        if budget <= 0:
            return None         # a counter that does not run: sleep on the locks only
        return _Polling(spin_wait.wait_for_change, budget, grace)

    @staticmethod
    def words():
        import numpy as np
        return np.zeros(2, np.int64)

    def caller_waits(self, words, watch_at, old):
        self._wait(words, -1, 0, watch_at, old, self._budget, 0)

    def worker_waits(self, words, publish_at, value, watch_at, old):
        self._wait(words, publish_at, value, watch_at, old, self._budget, self._grace)


def _take_workers(wanted):
    """Up to `wanted` idle workers, made as needed while the pool has fewer than
    max(wanted, thread count - 1); the pool is new in a forked child."""
    global _free, _made, _pool_pid
    with _pool_lock:
        if _pool_pid != os.getpid():
            _free, _made, _pool_pid = [], 0, os.getpid()
        while len(_free) < wanted and _made < max(wanted, get_num_threads() - 1):
            _free.append(_Worker(_made))
            _made += 1
        taken = _free[len(_free) - min(wanted, len(_free)):]
        del _free[len(_free) - len(taken):]
        return taken


def _finish(workers, results, errors):
    """Wait for every worker's part, fill in its result or error, give the workers back;
    then raise a signal's exception that came while waiting."""
    interrupted = None
    for i, worker in enumerate(workers, start=1):
        results[i], errors[i], signal_error = worker.wait()
        interrupted = interrupted or signal_error
    with _pool_lock:
        if _pool_pid == os.getpid():
            _free.extend(workers)
    if interrupted is not None:
        raise interrupted


# --- settings borrowed from the process -------------------------------------------------

class Borrowed:
    """A process-wide setting that caffe-lite changes while any of its calls needs it: the
    first caller saves the user's value and sets ours, the last one puts the user's back.

    Callers are counted per thread, so the setting is restored once, after the last
    thread leaves, however their scopes interleave.
    """
    def __init__(self, read, write):
        self._read, self._write = read, write
        self._holders = {}          # thread ident -> nesting depth
        self._saved = None
        self._lock = threading.Lock()

    @contextmanager
    def borrowed(self, value):
        me = threading.get_ident()
        with self._lock:
            if not self._holders:
                self._saved = self._read()
                self._write(value)
            self._holders[me] = self._holders.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                depth = self._holders.pop(me) - 1
                if depth:
                    self._holders[me] = depth
                elif not self._holders:
                    self._write(self._saved)

    def _after_fork_in_child(self):
        # Only the forking thread lives on in the child: its scopes still end normally;
        # the others never will, so if none is left, the user's value goes back now.
        self._lock = threading.Lock()
        me = threading.get_ident()
        held_before = bool(self._holders)
        self._holders = {me: self._holders[me]} if me in self._holders else {}
        if held_before and not self._holders:
            self._write(self._saved)


def find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy uses, or None."""
    import numpy as np
    np.dot(np.ones((2, 2)), np.ones((2, 2)))       # make sure BLAS is loaded
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


_openblas = None
_openblas_searched = False


def openblas():
    """find_openblas(), searched once per process."""
    global _openblas, _openblas_searched
    if not _openblas_searched:
        _openblas = find_openblas()
        _openblas_searched = True
    return _openblas


def _blas_threads_read():
    blas = openblas()
    return int(blas[0]()) if blas else None


def _blas_threads_write(n):
    blas = openblas()
    if blas and n is not None:
        blas[1](n)


BLAS = Borrowed(_blas_threads_read, _blas_threads_write)
SWITCH = Borrowed(sys.getswitchinterval, sys.setswitchinterval)


def blas_single_threaded():
    """OpenBLAS on one thread inside, the user's thread count back after the last thread
    leaves. Net passes, Solver.step and `caffe-lite time` run inside it: after a
    multi-threaded call OpenBLAS's threads spin for OPENBLAS_THREAD_TIMEOUT (about 0.1 s
    by default), holding cores that the next layer's own workers need."""
    return BLAS.borrowed(1)


@contextmanager
def blas_threads(n):
    """OpenBLAS on `n` threads inside, the previous count back on leaving: for a product
    that cannot be split (a batch of one) and so has every core to itself."""
    before = _blas_threads_read()
    if before is None or before == n:
        yield
        return
    _blas_threads_write(n)
    try:
        yield
    finally:
        _blas_threads_write(before)


# --- fork and the command's own process --------------------------------------------------

class ForkSafeRLock:
    """A threading.RLock that a forked child gets back unlocked: a thread that held it in
    the parent does not exist in the child and would never release it."""
    _all = weakref.WeakSet()

    def __init__(self):
        self._lock = threading.RLock()
        ForkSafeRLock._all.add(self)

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()

    def _after_fork_in_child(self):
        self._lock = threading.RLock()


def _after_fork_in_child():
    global _free, _made, _pool_pid, _pool_lock
    _free, _made, _pool_pid = [], 0, None
    _pool_lock = threading.Lock()
    BLAS._after_fork_in_child()
    SWITCH._after_fork_in_child()
    for lock in list(ForkSafeRLock._all):
        lock._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def configure_command_process():
    """What the caffe-lite command sets for its own process, first thing in cli.main.

    OPENBLAS_THREAD_TIMEOUT=4 (unless set): OpenBLAS's idle threads stop spinning after
    2^4 cycles instead of 2^28 (about 0.1 s). Passes keep OpenBLAS on one thread, but a
    batch of one hands it every core (kernels/gemm.py: split_batch), and its spinning
    threads would then steal a core from the next layer. OpenBLAS reads the variable when
    NumPy loads it, so it is set only while NumPy is not imported yet: when cli.main is
    called from a script that already has NumPy, it would do nothing but change the
    script's environment.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
