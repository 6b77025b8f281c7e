"""Data-parallel training on this machine, and its projected scaling over a network.

    python benchmarks/bench_distributed.py                         # all three parts
    python benchmarks/bench_distributed.py --part throughput --nets lenet --rounds 3
    python benchmarks/bench_distributed.py --part allreduce        # also prints the projection
    python benchmarks/bench_distributed.py --part allreduce \
        --compute-ms lenet=14.6,cifar10_quick=70.1,minivggnet=231.2,jacintonet11=1056.3

1. throughput: `caffe-lite train` on a synthetic LMDB (random uint8 images of the net's
   shape, the net's Data layer pointed at it with scale 1/256), as one process with two
   threads (CAFFE_LITE_NUM_THREADS=2) and as `mpiexec -n 2` with one thread a rank. images/s
   = iterations x batch x ranks / seconds, from the glog display lines after the first
   --skip-displays (Numba loading, prefetch start). The two runs alternate, --rounds times;
   the best run of each is compared too (other processes only slow a run down).
2. allreduce: in an `mpiexec -n 2` worker, per net, the gradient bytes averaged an iteration
   and the fastest of --reps (other processes on the machine only add time) of: the whole
   exchange as training runs it
   (caffe_lite.distributed.gradients: big blobs reduced in place, small ones packed, all
   scaled by 1/N), one MPI allreduce of those bytes in a single buffer, and the
   per-iteration status exchange; then, in a plain process with
   two threads, the median compute time of one iteration (bench_train.py's Input-layer
   nets: forward, backward, SGD update).
3. projection: weak scaling (the batch per machine fixed) on N machines of this kind, one
   rank each, ring allreduce over a B bit/s network with a per-message latency alpha:
       t_allreduce(N) = 2 (N - 1) (alpha + bytes / (N B)) + t_local
       t_status(N)    = 2 ceil(log2 N) alpha            (two small allgathers)
       efficiency     = t_compute / (t_compute + t_allreduce + t_status)
   t_local is the measured exchange minus the single-buffer MPI allreduce (packing, scaling
   and the extra calls' latencies on this machine);
   with the exchange overlapped with backward, at best t_compute / max(t_compute,
   t_forward + t_allreduce + t_status), t_forward taken as a third of t_compute.
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import NETS, input_net_param

# the four nets (bench_train.py knows more: --nets caffenet adds a 233 MB one)
DEFAULT_NETS = ("lenet", "cifar10_quick", "minivggnet", "jacintonet11")
NETWORKS = {"10 Gbit/s": 10e9 / 8, "25 Gbit/s": 25e9 / 8}
MACHINES = (8, 64)
ALPHA = 30e-6        # one small MPI message over TCP Ethernet, s
RECORDS = 1024
DISPLAY = re.compile(r"Iteration (\d+) \(([\d.e+-]+) iter/s, ([\d.e+-]+)s/(\d+) iters\)")


# --- 1. throughput ----------------------------------------------------------------------------
def synthetic_setup(name, folder, iters, display):
    """A solver file training `name` from a synthetic LMDB in `folder`; returns (path, batch)."""
    import numpy as np
    from google.protobuf import text_format

    from caffe_lite.data.datum import array_to_datum
    from caffe_lite.data.db import DBWriter
    from caffe_lite.proto import caffe_pb2

    param, batch, classes = input_net_param(name)
    chw = NETS[name][1]
    db = folder / f"{name}_lmdb"
    rng = np.random.default_rng(0)
    with DBWriter(str(db), "lmdb") as writer:
        for i in range(RECORDS):
            image = rng.integers(0, 256, chw).astype(np.uint8)
            writer.put(f"{i:08d}", array_to_datum(image, int(i % classes)).SerializeToString())
    for layer in param.layer:
        if layer.type == "Input":
            tops, lname = list(layer.top), layer.name
            layer.Clear()
            layer.name, layer.type = lname, "Data"
            layer.top.extend(tops)
            layer.data_param.source = str(db)
            layer.data_param.batch_size = batch
            layer.data_param.backend = caffe_pb2.DataParameter.LMDB
            layer.transform_param.scale = 1 / 256
    net = folder / f"{name}.prototxt"
    net.write_text(text_format.MessageToString(param))
    solver = folder / f"{name}_solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.001 momentum: 0.9 weight_decay: 0.0005\n'
                      f'lr_policy: "fixed" max_iter: {iters} display: {display}\n'
                      "random_seed: 1 snapshot_after_train: false\n")
    return solver, batch


def train_images_per_s(solver, batch, ranks, threads, skip):
    env = dict(os.environ, CAFFE_LITE_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "caffe_lite", "train", "-solver", str(solver)]
    if ranks > 1:
        command = [shutil.which("mpiexec"), "-n", str(ranks)] + command
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if run.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")
    displays = [(int(it), float(sec), int(per)) for it, _, sec, per in
                DISPLAY.findall(run.stderr)][skip:]
    if not displays:
        raise RuntimeError("no display line past the warm-up: raise --iters")
    iterations = sum(per for _, _, per in displays)
    seconds = sum(sec for _, sec, _ in displays)
    return iterations * batch * ranks / seconds


def throughput(names, iters, display, skip, rounds):
    print("## Throughput: 1 rank x 2 threads against 2 ranks x 1 thread (images/s)\n")
    print("| net | batch / rank | round | 1 x 2 | 2 x 1 | 2 x 1 / 1 x 2 |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            solver, batch = synthetic_setup(name, Path(tmp), iters, display)
            ones, twos = [], []
            for r in range(rounds):
                ones.append(train_images_per_s(solver, batch, 1, 2, skip))
                twos.append(train_images_per_s(solver, batch, 2, 1, skip))
                print(f"| {name} | {batch} | {r + 1} | {ones[-1]:,.0f} | {twos[-1]:,.0f} | "
                      f"{twos[-1] / ones[-1]:.2f} |", flush=True)
            # other processes on the machine only slow a run down: the best run of each
            print(f"| {name} | | best | {max(ones):,.0f} | {max(twos):,.0f} | "
                  f"{max(twos) / max(ones):.2f} |", flush=True)
    print()


# --- 2. allreduce -----------------------------------------------------------------------------
def allreduce_worker(name, reps):
    """Under mpiexec: the exchange's bytes and times for `name`; rank 0 prints RESULT."""
    import numpy as np
    from bench_train import make_solver
    from mpi4py import MPI

    from caffe_lite.distributed.comm import Communicator
    from caffe_lite.distributed.gradients import GradientAverager
    from caffe_lite.distributed.status import JobStatus

    param, _, _ = input_net_param(name)
    solver = make_solver(param)
    comm = Communicator(MPI, MPI.COMM_WORLD)
    averager = GradientAverager(comm, solver.params)
    rng = np.random.default_rng(comm.rank)
    for p in solver.params:
        p.diff[...] = rng.standard_normal(p.diff.shape)
    flat = np.zeros(averager.nbytes // 4, np.float32)
    status = JobStatus(comm)

    def timed(fn):
        # the fastest of the reps: another process on the machine only ever adds time
        out = []
        for _ in range(reps + 2):
            comm.barrier()
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return min(out[2:])

    result = {
        "bytes": averager.nbytes, "buckets": len(averager.buckets),
        "blobs": len(solver.params),
        "exchange_s": timed(averager.average),
        "mpi_s": timed(lambda: comm.allreduce_sum(flat)),
        "status_s": timed(lambda: status.exchange((0, 0))),
    }
    if comm.is_root:
        print("RESULT " + json.dumps(result), flush=True)


def compute_worker(name, iters):
    """A plain process (two threads): the median time of one training iteration."""
    from bench_train import make_solver, time_solver_steps
    param, batch, classes = input_net_param(name)
    times = time_solver_steps(make_solver(param), param, batch, classes, iters, 2)
    print("RESULT " + json.dumps({"compute_s": statistics.median(times)}), flush=True)


def run_worker(command, env):
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")


def measure_allreduce(names, reps, compute_iters):
    me = [sys.executable, str(Path(__file__).resolve())]
    rows = {}
    for name in names:
        row = run_worker([shutil.which("mpiexec"), "-n", "2"] + me +
                         ["--worker", "allreduce", name, "--reps", str(reps)],
                         dict(os.environ, CAFFE_LITE_NUM_THREADS="1"))
        row.update(run_worker(me + ["--worker", "compute", name, "--iters",
                                    str(compute_iters)],
                              dict(os.environ, CAFFE_LITE_NUM_THREADS="2")))
        rows[name] = row
    print("## Gradient exchange per iteration, 2 ranks on this machine (shared memory)\n")
    print("| net | values | MiB | blobs -> allreduces | exchange ms | one MPI allreduce ms | "
          "status ms | compute ms (1 x 2 threads) | exchange / compute |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes'] // 4:,} | {r['bytes'] / 2**20:.2f} | "
              f"{r['blobs']} -> {r['buckets']} | {r['exchange_s'] * 1e3:.2f} | "
              f"{r['mpi_s'] * 1e3:.2f} | {r['status_s'] * 1e3:.3f} | "
              f"{r['compute_s'] * 1e3:.1f} | {r['exchange_s'] / r['compute_s']:.1%} |")
    print()
    return rows


# --- 3. projection ----------------------------------------------------------------------------
def projected(row, machines, bandwidth, alpha=ALPHA):
    """(efficiency, efficiency overlapped at best, allreduce s) of `machines` (module doc)."""
    local = max(row["exchange_s"] - row["mpi_s"], 0.0)
    n = machines
    allreduce = 2 * (n - 1) * (alpha + row["bytes"] / (n * bandwidth)) + local
    status = 2 * math.ceil(math.log2(n)) * alpha
    compute = row["compute_s"]
    plain = compute / (compute + allreduce + status)
    overlapped = compute / max(compute, compute / 3 + allreduce + status)
    return plain, overlapped, allreduce


def projection(rows, compute_ms):
    """The table of section 3; `compute_ms` ({net: ms}) replaces measured compute times (a
    quiet machine's, when this one is busy: other processes inflate compute, not the model's
    network terms, and so the efficiency)."""
    rows = {name: dict(row, compute_s=compute_ms[name] / 1e3) if name in compute_ms else row
            for name, row in rows.items()}
    given = ", ".join(f"{n} {ms:g} ms" for n, ms in compute_ms.items() if n in rows)
    print(f"## Projected weak-scaling efficiency (ring allreduce, alpha = {ALPHA * 1e6:.0f} us)"
          + (f"; compute times given: {given}" if given else "; compute times measured above")
          + "\n")
    head = " | ".join(f"{m} x {net}" for net in NETWORKS for m in MACHINES)
    print(f"| net | {head} |")
    print("|---|" + "---:|" * (len(NETWORKS) * len(MACHINES)))
    for name, row in rows.items():
        cells = []
        for bandwidth in NETWORKS.values():
            for m in MACHINES:
                plain, overlapped, allreduce = projected(row, m, bandwidth)
                cells.append(f"{plain:.1%} ({allreduce * 1e3:.1f} ms; overlapped "
                             f"{overlapped:.1%})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "throughput", "allreduce"), default="all")
    ap.add_argument("--nets", help="comma-separated (default: throughput lenet,cifar10_quick; "
                                   "allreduce " + ",".join(DEFAULT_NETS) + ")")
    ap.add_argument("--iters", type=int, default=80, help="training iterations a run")
    ap.add_argument("--display", type=int, default=10)
    ap.add_argument("--skip-displays", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30, help="timed exchanges (the fastest counts)")
    ap.add_argument("--compute-iters", type=int, default=5)
    ap.add_argument("--compute-ms", default="",
                    help="NET=MS,... : compute times for the projection instead of the "
                         "measured ones (a quiet machine's)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, name = args.worker
        if kind == "allreduce":
            allreduce_worker(name, args.reps)
        else:
            compute_worker(name, args.iters)
        return
    if shutil.which("mpiexec") is None:
        sys.exit("no mpiexec: pip install 'caffe-lite[mpi]'")
    nets = args.nets.split(",") if args.nets else None
    if args.part in ("all", "throughput"):
        throughput(nets or ["lenet", "cifar10_quick"], args.iters, args.display,
                   args.skip_displays, args.rounds)
    if args.part in ("all", "allreduce"):
        compute_ms = dict((n, float(ms)) for n, ms in (
            item.split("=") for item in args.compute_ms.split(",") if item))
        rows = measure_allreduce(nets or list(DEFAULT_NETS), args.reps, args.compute_iters)
        projection(rows, {})
        if compute_ms:
            projection(rows, compute_ms)


if __name__ == "__main__":
    main()
