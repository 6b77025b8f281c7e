"""Polling without the GIL: how a pool worker and the caller of threads.run_parallel wait
for each other for a short while before they sleep on a lock.

A thread that sleeps on a lock leaves its vCPU idle; on the VMs caffe-lite is measured on
the guest halts it (no guest halt polling), and waking it again takes 30-40 us. A parallel
call paid that twice, handing the part over and handing the result back: two parts of 47 us
each took 138-153 us, the split cost more than it saved. A thread that polls a word of
memory instead sees the change within a few hundred nanoseconds: the same call now takes
61-63 us while the worker is polling, 108 us after it has gone to sleep. OpenMP runtimes
(PyTorch's) do the same: their threads spin a while after each parallel region before they
sleep.

`wait_for_change` runs in Numba without the GIL, so the other thread keeps running Python.
It is x86-64 only (the loop reads the time stamp counter and pauses with PAUSE); elsewhere
`available()` is False and the pool only sleeps on its locks, as before.
"""
import platform
import time

import numpy as np
from llvmlite import ir
from numba import config, types

from .jit import kernel
from numba.core import cgutils
from numba.extending import intrinsic


def _x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def _load_acquire(typingctx, words, i):
    """words[i], read from memory every time (an atomic load: the loop cannot keep it in a
    register)."""
    sig = types.int64(words, i)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)
    return sig, codegen


@intrinsic
def _store_release(typingctx, words, i, value):
    sig = types.void(words, i, value)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        builder.store_atomic(args[2], builder.gep(data, [args[1]]), "release", 8)
        return context.get_dummy_value()
    return sig, codegen


def _llvm_call(name, numba_type, llvm_type):
    """An intrinsic with no arguments that calls the LLVM function `name`."""
    @intrinsic
    def call(typingctx):
        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llvm_type, []),
                                                name)
            result = builder.call(fn, [])
            return context.get_dummy_value() if numba_type is types.void else result
        return numba_type(), codegen
    return call


#: PAUSE: a polling loop's hint to the core (and to a hypervisor's pause-loop exits)
_pause = _llvm_call("llvm.x86.sse2.pause", types.void, ir.VoidType())
#: the time stamp counter
_cycles = _llvm_call("llvm.readcyclecounter", types.int64, ir.IntType(64))


@kernel(nogil=True)
def wait_for_change(words, publish_at, value, watch_at, old, budget, grace):
    """Without the GIL: words[publish_at] = value (when publish_at >= 0), then poll until
    words[watch_at] != old, for at most `budget` counter ticks. True when it changed; then
    poll `grace` ticks more before returning (the GIL: below)."""
    if publish_at >= 0:
        _store_release(words, publish_at, value)
    start = _cycles()
    while _load_acquire(words, watch_at) == old:
        _pause()
        if _cycles() - start > budget:
            return False
    seen = _cycles()
    while _cycles() - seen < grace:
        _pause()
    return True


#: ticks the counter's rate is measured over, each of _CALIBRATION_RUNS times: about 1 ms
#: at 2.5 GHz
_CALIBRATION_TICKS = 2_500_000
#: the shortest of these runs counts: a run that the VM or the OS preempts past its end lasts
#: longer, never shorter. One run, preempted, once measured a rate 3x too low, and a 20 ms
#: budget gave up after 7 ms (tests/test_spin_wait.py in a loaded CI run)
_CALIBRATION_RUNS = 4
_ticks_per_second = None


def ticks(seconds):
    """`seconds` in time stamp counter ticks. The counter's rate is measured once, by timing
    waits that run out (one compiled function fewer than reading the counter itself)."""
    global _ticks_per_second
    if _ticks_per_second is None:
        never = np.zeros(1, np.int64)
        wait_for_change(never, -1, 0, 0, 0, 1, 0)          # compiled or loaded first
        shortest = float("inf")
        for _ in range(_CALIBRATION_RUNS):
            t0 = time.perf_counter()
            wait_for_change(never, -1, 0, 0, 0, _CALIBRATION_TICKS, 0)
            shortest = min(shortest, time.perf_counter() - t0)
        _ticks_per_second = _CALIBRATION_TICKS / shortest
    return int(seconds * _ticks_per_second)


def available():
    """Whether wait_for_change can run here: x86-64, with Numba compiling."""
    return _x86_64() and not config.DISABLE_JIT
