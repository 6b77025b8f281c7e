"""caffe_lite/threads.py: one thread count, one pool that a forked child re-creates, and the
process settings a pass borrows and gives back."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import caffe_lite
from caffe_lite import threads
from caffe_lite.errors import CaffeError
from caffe_lite.kernels import neuron

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_FORK = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")


def run_script(code, env=None, timeout=180):
    """Run `code` in a fresh interpreter (a hang or a crash there cannot take pytest down)
    with `env` on top of ours (None: unset); returns the JSON it prints last."""
    full_env = {**os.environ, threads.ENV_NUM_THREADS: None, "OPENBLAS_THREAD_TIMEOUT": None,
                **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the thread count -------------------------------------------------------------------

@pytest.fixture
def fresh_count(monkeypatch):
    """The count as at first use in a new process; the real one is restored afterwards."""
    monkeypatch.setattr(threads, "_num_threads", None)
    monkeypatch.delenv(threads.ENV_NUM_THREADS, raising=False)


def test_the_default_is_the_cores_this_process_may_use(fresh_count):
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert caffe_lite.get_num_threads() == want


def test_the_environment_variable_is_read_at_first_use(fresh_count, monkeypatch):
    monkeypatch.setenv(threads.ENV_NUM_THREADS, "3")
    assert caffe_lite.get_num_threads() == 3
    monkeypatch.setenv(threads.ENV_NUM_THREADS, "5")
    assert caffe_lite.get_num_threads() == 3
    caffe_lite.set_num_threads(2)
    assert caffe_lite.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5", ""])
def test_a_bad_environment_value_is_one_clear_line(fresh_count, monkeypatch, value):
    monkeypatch.setenv(threads.ENV_NUM_THREADS, value)
    if value == "":             # unset in effect: the default
        assert caffe_lite.get_num_threads() >= 1
        return
    with pytest.raises(CaffeError) as err:
        caffe_lite.get_num_threads()
    message = str(err.value)
    assert message.startswith(f"{threads.ENV_NUM_THREADS}={value!r}: ")
    assert "whole number >= 1" in message and "\n" not in message


@pytest.mark.parametrize("value", [0, -1, "x", True, 2.5, None])
def test_set_num_threads_rejects_what_is_not_a_count(fresh_count, value):
    with pytest.raises(CaffeError, match=r"^set_num_threads: the thread count must be"):
        caffe_lite.set_num_threads(value)
    assert threads._num_threads is None


def test_one_thread_runs_every_kernel_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 1)
    monkeypatch.setattr(neuron, "PARALLEL_MIN", 1)
    seen = []

    def kernel(x, out):
        seen.append(threading.get_ident())
        out[...] = 2 * x
    x = np.arange(12.0)
    out = np.empty_like(x)
    neuron.elementwise(kernel, x, out)
    assert seen == [threading.get_ident()] and (out == 2 * x).all()


def test_the_count_splits_elementwise_kernels(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 3)
    monkeypatch.setattr(neuron, "PARALLEL_MIN", 1)
    sizes = []

    def kernel(x, scale, out):
        sizes.append(x.size)
        out[...] = scale * x
    x = np.arange(10.0)
    out = np.empty_like(x)
    neuron.elementwise(kernel, x, 3.0, out)
    assert sorted(sizes) == [3, 3, 4] and (out == 3 * x).all()


# --- the pool ---------------------------------------------------------------------------

def test_run_parallel_returns_in_part_order_on_several_threads(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 3)
    barrier = threading.Barrier(3, timeout=30)    # passes only if all three run at once

    def part(i):
        barrier.wait()
        return i, threading.get_ident()
    results = threads.run_parallel(part, [(0,), (1,), (2,)])
    assert [i for i, _ in results] == [0, 1, 2]
    assert results[0][1] == threading.get_ident()
    assert len({ident for _, ident in results}) == 3


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_part_raises_after_every_part_finished(monkeypatch, failing):
    monkeypatch.setattr(threads, "_num_threads", 3)
    finished = []
    release = threading.Event()

    def part(i):
        if i == failing:
            raise KeyError(f"part {i}")
        if i == 2:
            release.wait(30)
        finished.append(i)
    timer = threading.Timer(0.2, release.set)
    timer.start()
    with pytest.raises(KeyError, match=f"part {failing}"):
        threads.run_parallel(part, [(0,), (1,), (2,)])
    assert 2 in finished
    timer.join()


def test_a_nested_run_stays_on_its_own_thread(monkeypatch):
    """Parts that split again run their sub-parts inline: with every pool worker busy
    with an outer part, waiting on the pool from inside one would never return."""
    monkeypatch.setattr(threads, "_num_threads", 2)

    def inner(i):
        return threading.get_ident()

    def outer(i):
        idents = threads.run_parallel(inner, [(0,), (1,)])
        return set(idents) == {threading.get_ident()}
    assert threads.run_parallel(outer, [(0,), (1,)]) == [True, True]


def test_the_pool_grows_when_the_count_does(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 2)
    threads.run_parallel(lambda i: i, [(0,), (1,)])
    monkeypatch.setattr(threads, "_num_threads", 4)
    barrier = threading.Barrier(4, timeout=30)    # passes only if all four run at once

    def part(i):
        barrier.wait()
        return i
    assert threads.run_parallel(part, [(0,), (1,), (2,), (3,)]) == [0, 1, 2, 3]


def test_callers_on_two_threads_share_the_pool(monkeypatch):
    """Two Python threads split work at once: each gets the workers that are free and runs
    the rest of its parts itself, and each gets its own results, in part order."""
    monkeypatch.setattr(threads, "_num_threads", 2)
    start = threading.Barrier(2, timeout=30)
    out = {}

    def part(caller, i):
        time.sleep(0.01)
        return caller, i

    def caller(name):
        start.wait()
        out[name] = [threads.run_parallel(part, [(name, i) for i in range(3)])
                     for _ in range(20)]
    runs = [threading.Thread(target=caller, args=(name,)) for name in "ab"]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    for name in "ab":
        assert out[name] == [[(name, 0), (name, 1), (name, 2)]] * 20


def test_a_signal_during_the_wait_is_raised_after_the_part_finished(monkeypatch):
    """Ctrl-C while the calling thread waits for a worker: the part still writes the
    caller's arrays, so the wait goes on, and KeyboardInterrupt comes after it."""
    monkeypatch.setattr(threads, "_num_threads", 2)
    # Python's own handler, also where the process started with SIGINT ignored (a
    # background job of a shell without job control)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threads.run_parallel(lambda i: i, [(0,), (1,)])     # the worker made before the timer
    finished = []

    def part(i):
        if i == 1:
            time.sleep(0.4)
            finished.append(i)
    main = threading.get_ident()
    timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            threads.run_parallel(part, [(0,), (1,)])
        assert finished == [1]
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)


# --- borrowed settings ------------------------------------------------------------------

def test_a_borrowed_setting_is_restored_once_by_the_last_thread():
    value = ["user"]
    setting = threads.Borrowed(lambda: value[0], lambda v: value.__setitem__(0, v))
    inside, leave = threading.Event(), threading.Event()

    def other():
        with setting.borrowed("ours"):
            inside.set()
            leave.wait(30)
    t = threading.Thread(target=other)
    with setting.borrowed("ours"):
        t.start()
        inside.wait(30)
        with setting.borrowed("ours"):
            assert value == ["ours"]
    assert value == ["ours"]            # the other thread is still inside
    leave.set()
    t.join(30)
    assert value == ["user"]
    with pytest.raises(KeyError):
        with setting.borrowed("ours"):
            raise KeyError("boom")
    assert value == ["user"]


@pytest.mark.skipif(threads.openblas() is None, reason="NumPy's OpenBLAS not found")
def test_single_threaded_scope_nests_and_restores():
    get, put = threads.openblas()
    before = get()
    put(2)
    try:
        with threads.blas_single_threaded():
            assert get() == 1
            with threads.blas_single_threaded():
                assert get() == 1
            assert get() == 1
        assert get() == 2
        with pytest.raises(KeyError):
            with threads.blas_single_threaded():
                raise KeyError("boom")
        assert get() == 2
    finally:
        put(before)


def test_parallel_runs_give_the_switch_interval_back(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", 2)
    before = sys.getswitchinterval()
    seen = threads.run_parallel(lambda i: sys.getswitchinterval(), [(0,), (1,)])
    assert seen == [threads.SWITCH_INTERVAL] * 2
    assert sys.getswitchinterval() == before


# --- fork -------------------------------------------------------------------------------

FORK_SCRIPT = """
import json, os, sys, time
import numpy as np
from google.protobuf import text_format
import caffe_lite as caffe
from caffe_lite.proto import caffe_pb2

db, images_path = sys.argv[1], sys.argv[2]
images = np.load(images_path)
# a batch of 4 images of 8x64x64 = 2^17 values: the convolution splits the batch and the
# ReLU and pooling kernels split their ranges, so every kind of part runs on the pool
NET = '''
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "%s" batch_size: 4 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
''' % db
caffe.set_random_seed(1)
net = caffe.Net(param=text_format.Parse(NET, caffe_pb2.NetParameter()), phase=caffe.TEST)


def passes(first, count):
    sums = []
    for k in range(first, first + count):
        net.forward()
        records = [(4 * k + i) % len(images) for i in range(4)]
        if not np.array_equal(net.blobs["data"].data, images[records]):
            return "wrong batch %d" % k
        sums.append(float(net.blobs["pool"].data.astype(np.float64).sum()))
    return sums


passes(0, 2)
# more passes in the child than the prefetch queue holds, so it must produce its own
pid = os.fork()
if pid == 0:
    with open(sys.argv[3], "w") as f:
        json.dump(passes(2, 7), f)
    os._exit(0)
deadline = time.monotonic() + 60
status = None
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    status = None
print(json.dumps({"child": None if status is None else os.waitstatus_to_exitcode(status),
                  "parent": passes(2, 7)}))
"""


@NEEDS_FORK
def test_a_forked_child_runs_the_next_pass(tmp_path):
    """A child forked after a threaded pass (convolution, element-wise kernels, Data
    prefetch) runs passes of its own with the same results as its parent's."""
    from caffe_lite.data.datum import array_to_datum
    from caffe_lite.data.db import DBWriter
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 64, 64)).astype(np.uint8)
    with DBWriter(tmp_path / "db", "lmdb") as db:
        for i, image in enumerate(images):
            db.put(f"{i:08d}", array_to_datum(image, i).SerializeToString())
    np.save(tmp_path / "images.npy", images.astype(np.float32))
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    child_out = tmp_path / "child.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "db"), str(tmp_path / "images.npy"),
         str(child_out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, threads.ENV_NUM_THREADS: "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["child"] == 0, "the forked child hung or failed"
    assert isinstance(result["parent"], list) and len(result["parent"]) == 7
    assert json.loads(child_out.read_text()) == result["parent"]


# --- the command's own process ----------------------------------------------------------

def test_importing_caffe_lite_or_its_command_module_loads_no_numpy():
    seen = run_script("""
        import json, sys
        import caffe_lite, caffe_lite.cli
        print(json.dumps("numpy" in sys.modules))
    """)
    assert seen is False


def test_the_command_sets_the_blas_timeout_before_numpy_loads():
    seen = run_script("""
        import io, json, os, contextlib
        from caffe_lite import cli
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(["--version"])
        print(json.dumps(os.environ.get("OPENBLAS_THREAD_TIMEOUT")))
    """)
    assert seen == "4"


def test_a_script_with_numpy_keeps_its_environment():
    seen = run_script("""
        import io, json, os, contextlib
        import numpy
        from caffe_lite import cli
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(["--version"])
        print(json.dumps(os.environ.get("OPENBLAS_THREAD_TIMEOUT")))
    """)
    assert seen is None


def test_pycaffe_names_load_on_first_use():
    import caffe_lite as caffe
    from caffe_lite import Net
    from caffe_lite.net import Net as NetClass
    assert Net is caffe.Net is NetClass
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    assert caffe.proto.caffe_pb2.NetParameter().name == ""
    assert callable(caffe.io.blobproto_to_array)
    assert "Convolution" in caffe.layer_type_list()
    assert set(caffe.__all__) <= set(dir(caffe))
    with pytest.raises(AttributeError, match="no attribute 'Nett'"):
        caffe.Nett
