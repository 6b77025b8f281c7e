"""The pool's polling (kernels/spin_wait.py, threads._Polling): a worker and its caller
poll a word of memory for a while before they sleep on their locks."""
import threading
import time

import numpy as np
import pytest

from caffe_lite import threads
from caffe_lite.errors import CaffeError
from caffe_lite.kernels import spin_wait

from test_threads import run_script

NEEDS_POLLING = pytest.mark.skipif(not spin_wait.available(),
                                   reason="polling is x86-64 only; the pool sleeps elsewhere")


@NEEDS_POLLING
def test_the_wait_publishes_then_sees_another_threads_change():
    words = np.zeros(2, np.int64)
    seen = []

    def changer():
        while words[1] != 7:            # the waiter's published value
            time.sleep(0.001)
        words[0] = 1
    t = threading.Thread(target=changer)
    t.start()
    seen.append(spin_wait.wait_for_change(words, 1, 7, 0, 0, spin_wait.ticks(30.0), 0))
    t.join(30)
    assert seen == [True] and words[1] == 7


@NEEDS_POLLING
def test_the_wait_gives_up_after_its_budget():
    words = np.zeros(1, np.int64)
    start = time.perf_counter()
    assert not spin_wait.wait_for_change(words, -1, 0, 0, 0, spin_wait.ticks(0.02), 0)
    elapsed = time.perf_counter() - start
    assert 0.015 <= elapsed < 5.0        # the counter's rate is itself measured (ticks)
    assert spin_wait.ticks(1.0) > 0


def test_a_bad_polling_time_is_one_clear_line(monkeypatch):
    monkeypatch.setenv(threads.ENV_SPIN, "soon")
    with pytest.raises(CaffeError, match="CAFFE_LITE_SPIN_US='soon': microseconds"):
        threads._Polling.make()


def test_zero_turns_polling_off(monkeypatch):
    monkeypatch.setenv(threads.ENV_SPIN, "0")
    assert threads._Polling.make() is None


HANDOFFS = """
    import json, threading
    import numpy as np
    from caffe_lite import threads
    from caffe_lite.kernels import neuron
    threads.set_num_threads(2)
    x = np.arange(1 << 16, dtype=np.float32) - (1 << 15)
    wrong, others = 0, set()
    for i in range(3000):
        # parts of a few microseconds, back to back: every handover while the worker polls
        parts = threads.run_parallel(lambda k: (k + i, threading.get_ident()), [(0,), (1,)])
        wrong += [p[0] for p in parts] != [i, i + 1]
        others.add(parts[1][1])
        if i % 500 == 0:
            y = np.empty_like(x)
            neuron.elementwise(neuron.relu_forward, x, np.float32(0), y, parallel_min=1)
            wrong += not np.array_equal(y, np.maximum(x, 0))
    polling = threads._free[0]._polling is not None
    print(json.dumps({"wrong": int(wrong), "others": len(others), "polling": polling,
                      "main": threading.get_ident() in others}))
"""


@pytest.mark.parametrize("spin_us", ["", "0", "3", "100000"])
def test_quick_handovers_lose_no_part(spin_us):
    """Thousands of tiny parts back to back, with polling off, shorter than a handover,
    the default and long: each part runs once on the worker and returns its own result."""
    out = run_script(HANDOFFS, env={threads.ENV_SPIN: spin_us or None})
    assert out["wrong"] == 0 and out["others"] == 1 and not out["main"]
    assert out["polling"] == (spin_us != "0" and spin_wait.available())
