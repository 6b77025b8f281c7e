"""Compile a training net's update and backward kernels in a second process, on a cold
kernel cache, while the training process compiles its forward.

Numba compiles one kernel at a time in a process (a global lock), and the first iteration
of a net on a cold cache is mostly compiling: LeNet's one-iteration `train` spent about 4 of
its 5 s in 17 kernels, half of them in the backward pass and the update. `start` launches
`python -m caffe_lite.compile_ahead` on the same solver. The helper builds the training net
and runs the update, then each layer's backward from the first layer on: the reverse of the
order in which the training process reaches them, so that the two meet in the middle. It
runs on the buffers as they are built (zeros) and computes nothing the run uses; every
kernel it compiles lands in the shared cache (Numba writes its files atomically), and the
training process, when it gets to that kernel, loads it instead of compiling it. A layer
whose backward needs state from its forward fails in the helper and is skipped: the training
process compiles its kernels itself, as it would without the helper. A net the helper cannot
build (a layer type registered in the training process only) just ends the helper.

The helper runs only where it can help: with two threads or more (CAFFE_LITE_NUM_THREADS), in
a plain process (not a rank of an MPI job), and when the job's kernels are not known to be
cached. After its first update the training process stops the helper and leaves a marker
in Numba's cache folder, named by a hash of the solver, its net file and the kernels'
source files (Numba's own cache is keyed by those sources), so that the next run of the job
starts no helper. CAFFE_LITE_COMPILE_AHEAD=0 turns it off.

The helper holds a second copy of the training net while it runs (a few seconds): the
memory of the parameters and buffers once more, in its own process.
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from .log import LOG

ENV = "CAFFE_LITE_COMPILE_AHEAD"
_KERNEL_SOURCES = Path(__file__).resolve().parent / "kernels"
_NET_FIELDS = ("train_net", "net")


class CompileAhead:
    """The helper process of one training run, and the marker its first update leaves."""

    def __init__(self, process, marker):
        self.process = process
        self.marker = marker

    def stop(self):
        """End the helper (its cached kernels stay cached)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def first_update_done(self):
        """Every kernel of a training iteration is cached now: stop the helper, leave the
        marker."""
        self.stop()
        if self.marker is not None:
            try:
                self.marker.touch()
            except OSError:
                pass                        # a read-only cache: the next run just compiles
            self.marker = None


def start(param, solver_path, environ=os.environ):
    """The helper for this solver (a SolverParameter with the command's flags applied), or
    None where it would not help."""
    from .threads import get_num_threads
    if environ.get(ENV, "1") == "0" or get_num_threads() < 2:
        return None
    marker = marker_path(param, solver_path)
    if marker is None or marker.exists():
        return None
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, os.fspath(solver_path or "")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None                         # no interpreter to start: the run compiles alone
    try:
        process.stdin.write(param.SerializeToString())
        process.stdin.close()
    except OSError:
        pass                                # it died already: the run compiles alone
    LOG.info("Kernel cache is cold: compiling the backward pass in a second process "
             "(pid %d)", process.pid)
    return CompileAhead(process, marker)


def marker_path(param, solver_path):
    """The marker file of this job in Numba's cache folder for the kernels, or None where
    that folder is unknown."""
    from .kernels.sgd_update import sgd_update
    try:
        folder = Path(sgd_update._cache.cache_path)
    except AttributeError:                  # another Numba's internals: no helper
        return None
    digest = hashlib.sha256(param.SerializeToString(deterministic=True))
    for field in _NET_FIELDS:
        if param.HasField(field):
            digest.update(_file_bytes(getattr(param, field), solver_path))
    for source in sorted(_KERNEL_SOURCES.glob("*.py")):
        stat = source.stat()
        digest.update(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return folder / f"compile_ahead-{digest.hexdigest()[:20]}.done"


def _file_bytes(path, solver_path):
    from .solvers.validate import resolve_net_file
    try:
        return Path(resolve_net_file(path, solver_path)).read_bytes()
    except OSError:
        return b""


def compile_backward(solver):
    """The update, then every layer's backward in the net's forward order; a step
    that fails is skipped (see the module's note)."""
    try:
        solver.apply_update()
    except Exception:                       # noqa: BLE001 - the training process compiles it
        pass
    net = solver.net
    for rec in net._layer_records:
        if not rec.need_backward:
            continue
        try:
            rec.layer.backward(rec.tops, rec.bottom_need_backward, rec.bottoms)
        except Exception:                   # noqa: BLE001 - needs its forward's state
            pass


def main():
    from .proto import caffe_pb2
    from .solvers.factory import get_solver
    param = caffe_pb2.SolverParameter()
    param.ParseFromString(sys.stdin.buffer.read())
    for field in ("test_net", "test_net_param", "test_iter", "test_state", "test_interval",
                  "weights"):
        param.ClearField(field)            # the helper builds the training net only
    solver = get_solver(param, path=sys.argv[1] or None)
    compile_backward(solver)
    # Numba has written each kernel's cache files as it compiled it: nothing is left to
    # flush, and a data layer's prefetch thread must not keep the helper alive
    os._exit(0)


if __name__ == "__main__":
    main()
