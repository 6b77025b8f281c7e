"""A tiny data-parallel training setup for the tests: an LMDB of 64 6x6 images, a net of
about 300 parameters (optionally with BatchNorm), and solvers for one or two ranks."""
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

RECORDS = 64
BATCH = 4

NET = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 mirror: true }}
  data_param {{ source: "{db}" batch_size: {batch} backend: LMDB {shuffle} }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{db}" batch_size: 8 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 bias_term: {conv_bias}
                       weight_filler {{ type: "xavier" }} }} }}
{batch_norm}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include {{ phase: TEST }} }}
"""
BATCH_NORM = """layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
  batch_norm_param {{ moving_average_fraction: 0.9 {nvcaffe} }} }}"""

RULES = {
    "SGD": 'type: "SGD" base_lr: 0.1 momentum: 0.9',
    "Nesterov": 'type: "Nesterov" base_lr: 0.05 momentum: 0.9',
    "Adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999',
}


def make_db(path, bad_record=None):
    """RECORDS raw 1x6x6 datums with labels 0-3; `bad_record` holds bytes that are no Datum."""
    from caffe_lite.data.datum import array_to_datum
    from caffe_lite.data.db import DBWriter
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (RECORDS, 1, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, 4, RECORDS)
    with DBWriter(str(path), "lmdb") as db:
        for i in range(RECORDS):
            value = array_to_datum(images[i], int(labels[i])).SerializeToString()
            db.put(f"{i:08d}", b"\xff\xfe not a datum" if i == bad_record else value)
    return path


def write_net(folder, db, batch_norm=False, shuffle=False, name="net.prototxt"):
    """batch_norm: False, True (BVLC's) or "nvcaffe" (NVCaffe 0.16's, scale_bias)."""
    path = Path(folder) / name
    layer = BATCH_NORM.format(nvcaffe="scale_bias: true" if batch_norm == "nvcaffe" else "")
    path.write_text(NET.format(db=db, batch=BATCH, shuffle="shuffle: true" if shuffle else "",
                               conv_bias="false" if batch_norm else "true",
                               batch_norm=layer if batch_norm else ""))
    return path


def write_solver(folder, net, name, rule="SGD", iter_size=1, max_iter=20, snapshot=20,
                 test_interval=10, prefix=None):
    """<folder>/<name>.prototxt, snapshots to <folder>/<prefix or name>_iter_N.*"""
    path = Path(folder) / f"{name}.prototxt"
    path.write_text(f'net: "{net}"\n{RULES[rule]}\nweight_decay: 0.001 lr_policy: "fixed"\n'
                    f"max_iter: {max_iter} display: 5 random_seed: 7 iter_size: {iter_size}\n"
                    f'test_iter: 2 test_interval: {test_interval} snapshot: {snapshot}\n'
                    f'snapshot_prefix: "{Path(folder) / (prefix or name)}"\n')
    return path


@functools.lru_cache(maxsize=None)
def mpiexec():
    """(the mpiexec to use, "") or (None, why) when data-parallel runs cannot start."""
    import importlib.util
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install 'caffe-lite[mpi]')"
    found = shutil.which("mpiexec")
    if found is None:
        return None, "no mpiexec on PATH (pip install 'caffe-lite[mpi]' brings MPICH's)"
    # in a child: importing mpi4py.MPI starts MPI, which the test process must not do
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"mpi4py cannot load an MPI library: {last}"
    return found, ""


def rank_env(**extra):
    """One thread per rank (two ranks share this machine's cores) and a quiet Open MPI."""
    env = dict(os.environ, CAFFE_LITE_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **extra)
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                 "MPI_LOCALNRANKS"):
        env.pop(name, None)
    return env


def caffe_lite_command():
    return [sys.executable, "-m", "caffe_lite"]


def run_ranks(n, args, cwd, timeout=120, **env):
    """`mpiexec -n N caffe-lite ARGS`; returns the CompletedProcess (text)."""
    launcher, _ = mpiexec()
    return subprocess.run([launcher, "-n", str(n)] + caffe_lite_command() + list(args),
                          cwd=cwd, env=rank_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def read_model(path):
    """{(layer, blob index): array} of a .caffemodel."""
    from caffe_lite.io.binary import read_net_binary
    from caffe_lite.io.blobs import blob_proto_to_array
    net = read_net_binary(str(path))
    return {(layer.name, i): blob_proto_to_array(b)
            for layer in net.layer for i, b in enumerate(layer.blobs)}


def command_line(n, args):
    """mpiexec -n N caffe-lite ARGS (the console script when it is installed)."""
    launcher, _ = mpiexec()
    script = shutil.which("caffe-lite")
    program = [script] if script else caffe_lite_command()
    return [launcher, "-n", str(n)] + program + list(args)


class LiveRun:
    """A job whose output is read while it runs, to signal or kill it at a given point."""

    def __init__(self, argv, cwd, **env):
        import threading
        self.lines = []
        # a session of its own: kill() ends mpiexec and every process it started
        self.proc = subprocess.Popen(argv, cwd=cwd, env=rank_env(**env), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=60):
        """The first output line containing `text` (AssertionError after `timeout` s)."""
        import time
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"no line with {text!r}; output:\n" + "\n".join(self.lines[-30:]))

    def finish(self, timeout=60):
        """(exit code, output lines) once the job ends; killed after `timeout` s."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the job did not end in time:\n" + "\n".join(self.lines[-30:]))
        self._reader.join(10)
        return code, self.lines

    def kill(self):
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.proc.kill()
        self.proc.wait()
