"""Forward + backward time of the Convolution layer on cifar10_quick's and LeNet's shapes,
against PyTorch's CPU conv2d (fwd + bwd) measured in the same run when torch imports.

    python benchmarks/bench_conv.py [--reps 30] [--rounds 3] [--dtype float32] [--gate]

Each framework runs in its own process (PyTorch's idle OpenMP threads spin, and would take the
cores from caffe-lite's next call in a shared process), in --rounds alternating rounds so a
slow spell of the shared machine hits both. Repetitions run back to back, as in training.
With --gate each first waits for an idle machine (at most 10 s) and makes one untimed call;
on these VMs the calls after an idle spell stay slow for a while (caffe-lite's cifar10 conv2:
37-40 ms against 30 back to back; its worker threads sleep between passes, PyTorch's spin).
The table gives the minimum and the median over repetitions, GFLOP/s from the minimum, and
the ratio caffe-lite / PyTorch of the minima and of the medians.
The first layer of each net computes no bottom diff (the data needs none), in both.
FLOPs: forward 2*N*M*K*P (K = C/g*kh*kw, P = OH*OW); backward the same for the weight
gradient and again for the bottom gradient when computed.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffe_lite.blob import Blob  # noqa: E402
from caffe_lite.common import TRAIN  # noqa: E402
from caffe_lite.layers import create_layer  # noqa: E402
from caffe_lite.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

# name, batch, (C, H, W), num_output, kernel, pad, needs bottom diff
SHAPES = [
    ("cifar10_quick conv1", 100, (3, 32, 32), 32, 5, 2, False),
    ("cifar10_quick conv2", 100, (32, 16, 16), 32, 5, 2, True),
    ("cifar10_quick conv3", 100, (32, 8, 8), 64, 5, 2, True),
    ("LeNet conv1", 64, (1, 28, 28), 20, 5, 0, False),
    ("LeNet conv2", 64, (20, 12, 12), 50, 5, 0, True),
]


def make_conv(batch, chw, num_output, kernel, pad, dtype):
    param = caffe_pb2.LayerParameter()
    text_format.Parse(f'name: "conv" type: "Convolution" bottom: "x" top: "y" '
                      f"convolution_param {{ num_output: {num_output} kernel_size: {kernel} "
                      f'pad: {pad} weight_filler {{ type: "xavier" }} }}', param)
    layer = create_layer(param, TRAIN, dtype)
    bottom, top = [Blob((batch,) + chw, dtype)], [Blob((), dtype)]
    rng = np.random.default_rng(0)
    bottom[0].data[...] = rng.standard_normal(bottom[0].shape)
    layer.setup(bottom, top)
    layer.blobs[0].data[...] = rng.standard_normal(layer.blobs[0].shape) * 0.1
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    return layer, bottom, top


def torch_step(batch, chw, num_output, kernel, pad, needs_dx, dtype):
    import torch
    import torch.nn.functional as F
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    x = torch.randn((batch,) + chw, dtype=tdtype, requires_grad=needs_dx)
    w = torch.randn((num_output, chw[0], kernel, kernel), dtype=tdtype, requires_grad=True)
    b = torch.zeros(num_output, dtype=tdtype, requires_grad=True)
    oh = chw[1] + 2 * pad - kernel + 1
    dy = torch.randn((batch, num_output, oh, chw[2] + 2 * pad - kernel + 1), dtype=tdtype)

    def step():
        x.grad = w.grad = b.grad = None
        F.conv2d(x, w, b, padding=pad).backward(dy)
    return step


def _cpu_snapshot():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def wait_idle(max_wait=10.0, window=0.2, threshold=0.05):
    """Wait (at most max_wait s) until the machine has been idle for `window` seconds, so
    that a repetition does not share the two cores with another job. Linux only."""
    try:
        deadline = time.time() + max_wait
        while time.time() < deadline:
            total0, idle0 = _cpu_snapshot()
            time.sleep(window)
            total1, idle1 = _cpu_snapshot()
            if total1 > total0 and 1 - (idle1 - idle0) / (total1 - total0) < threshold:
                return True
    except OSError:
        pass
    return False


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(kind, reps, dtype, gate):
    """{layer name: [seconds per repetition]} for one framework ("caffe" or "torch"), in this
    process alone; None for torch when it does not import."""
    if kind == "torch":
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(2)
    times = {}
    for name, batch, chw, m, k, pad, needs_dx in SHAPES:
        if kind == "torch":
            step = torch_step(batch, chw, m, k, pad, needs_dx, dtype)
        else:
            layer, bottom, top = make_conv(batch, chw, m, k, pad, dtype)

            def step(layer=layer, bottom=bottom, top=top, needs_dx=needs_dx):
                layer.forward(bottom, top)
                layer.backward(top, [needs_dx], bottom)
        for _ in range(3):
            step()
        times[name] = []
        for _ in range(reps):
            if gate:
                wait_idle()
                # untimed: the first call after an idle spell pays for waking the virtual
                # CPUs (measured 2x slower on these VMs), which a training loop never sees
                step()
            times[name].append(timed(step))
    return times


def spawn(kind, reps, dtype, gate):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--reps", str(reps),
           "--dtype", dtype] + (["--gate"] if gate else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.stderr.write(proc.stderr[-4000:])
    raise RuntimeError(f"{kind} worker failed (exit {proc.returncode})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions per layer, in all")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating caffe-lite / PyTorch processes, reps split among them")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--gate", action="store_true",
                    help="wait for an idle machine before each repetition (the wake-up after "
                         "the idle spell then slows the next calls; see the module doc)")
    ap.add_argument("--worker", choices=["caffe", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    dtype = np.dtype(args.dtype)
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.reps, dtype, args.gate)))
        return
    rounds = max(1, min(args.rounds, args.reps))
    per_round = [args.reps * (i + 1) // rounds - args.reps * i // rounds for i in range(rounds)]
    t_ours = {name: [] for name, *_ in SHAPES}
    t_torch = {name: [] for name, *_ in SHAPES}
    have_torch = True
    for reps in per_round:
        for kind, into in (("caffe", t_ours), ("torch", t_torch)):
            if kind == "torch" and not have_torch:
                continue
            result = spawn(kind, reps, args.dtype, args.gate)
            if result is None:
                have_torch = False
                continue
            for name, values in result.items():
                into[name].extend(values)

    rows = []
    for name, batch, chw, m, k, pad, needs_dx in SHAPES:
        oh = chw[1] + 2 * pad - k + 1
        ow = chw[2] + 2 * pad - k + 1
        flops = 2 * batch * m * chw[0] * k * k * oh * ow * (3 if needs_dx else 2)
        rows.append((name, batch, flops, t_ours[name], t_torch[name] if have_torch else []))

    print(f"caffe-lite Convolution layer, forward + backward, {dtype.name}, "
          f"{args.reps} repetitions in {rounds} alternating rounds, each framework in its own "
          "process" + ("" if have_torch else "; PyTorch not installed"))
    head = ("| layer | batch | GFLOP | caffe-lite ms (min / median) | GFLOP/s | "
            "PyTorch ms (min / median) | GFLOP/s | ratio (min / median) |")
    print(head)
    print("|" + "---|" * 8)
    min_ours = min_torch = 0.0
    tot_ours = tot_torch = 0.0
    for name, batch, flops, t_ours, t_torch in rows:
        o_min, o_med = min(t_ours), float(np.median(t_ours))
        tot_ours += o_med
        min_ours += o_min
        line = (f"| {name} | {batch} | {flops / 1e9:.3f} | {o_min * 1e3:.2f} / "
                f"{o_med * 1e3:.2f} | {flops / o_min / 1e9:.1f} |")
        if t_torch:
            p_min, p_med = min(t_torch), float(np.median(t_torch))
            tot_torch += p_med
            min_torch += p_min
            line += (f" {p_min * 1e3:.2f} / {p_med * 1e3:.2f} | {flops / p_min / 1e9:.1f} | "
                     f"{o_min / p_min:.2f} / {o_med / p_med:.2f} |")
        else:
            line += " n/a | n/a | n/a |"
        print(line)
    if tot_torch:
        print(f"| all five (sums) | | | {min_ours * 1e3:.1f} / {tot_ours * 1e3:.1f} | | "
              f"{min_torch * 1e3:.1f} / {tot_torch * 1e3:.1f} | | "
              f"{min_ours / min_torch:.2f} / {tot_ours / tot_torch:.2f} |")


if __name__ == "__main__":
    main()
