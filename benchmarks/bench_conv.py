"""Forward and backward time of the Convolution layer on the legacy nets' shapes, against
PyTorch's CPU conv2d measured in the same run when torch imports, and against the machine's
fp32 peak, measured in the same run as the best rate of a large NumPy (BLAS) GEMM.

    python benchmarks/bench_conv.py [--nets cifar10_quick,lenet,caffenet,minivggnet]
                                    [--reps 30] [--rounds 3] [--dtype float32] [--gate]

Shapes: cifar10_quick's convolutions (batch 100), LeNet's (64), CaffeNet's conv2-conv5 (16, the
training batch of bench_train.py; conv2, conv4 and conv5 in two groups) and miniVggNet's
(128). Each framework runs in its own process (PyTorch's idle OpenMP threads spin, and would
take the cores from caffe-lite's next call in a shared process), in --rounds alternating
rounds so a slow spell of the shared machine hits both; the peak GEMM runs in a third process
each round. Repetitions run back to back, as in training; each times the forward and the
backward apart. With --gate each first waits for an idle machine (at most 10 s) and makes one
untimed call; on these VMs the calls after an idle spell stay slow for a while.
The first layer of each net computes no bottom diff (the data needs none), in both.
FLOPs: forward 2*N*M*K*P (K = C/g*kh*kw, P = OH*OW); backward the same for the weight
gradient and again for the bottom gradient when computed. GFLOP/s and the share of the peak
come from the minimum time (the peak too is a best rate); the ratio caffe-lite / PyTorch is
given for the minima and the medians.
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

# name, batch, (C, H, W), num_output, kernel, pad, stride, group, needs bottom diff
NETS = {
    "cifar10_quick": [
        ("cifar10_quick conv1", 100, (3, 32, 32), 32, 5, 2, 1, 1, False),
        ("cifar10_quick conv2", 100, (32, 16, 16), 32, 5, 2, 1, 1, True),
        ("cifar10_quick conv3", 100, (32, 8, 8), 64, 5, 2, 1, 1, True),
    ],
    "lenet": [
        ("LeNet conv1", 64, (1, 28, 28), 20, 5, 0, 1, 1, False),
        ("LeNet conv2", 64, (20, 12, 12), 50, 5, 0, 1, 1, True),
    ],
    "caffenet": [
        ("CaffeNet conv2", 16, (96, 27, 27), 256, 5, 2, 1, 2, True),
        ("CaffeNet conv3", 16, (256, 13, 13), 384, 3, 1, 1, 1, True),
        ("CaffeNet conv4", 16, (384, 13, 13), 384, 3, 1, 1, 2, True),
        ("CaffeNet conv5", 16, (384, 13, 13), 256, 3, 1, 1, 2, True),
    ],
    "minivggnet": [
        ("miniVggNet conv1", 128, (3, 32, 32), 32, 3, 1, 1, 1, False),
        ("miniVggNet conv2", 128, (32, 32, 32), 32, 3, 1, 1, 1, True),
        ("miniVggNet conv3", 128, (32, 16, 16), 64, 3, 1, 1, 1, True),
        ("miniVggNet conv4", 128, (64, 16, 16), 64, 3, 1, 1, 1, True),
    ],
}
PEAK_GEMMS = (2048, 4096)   # square GEMMs of 17 and 137 GFLOP: BLAS's best rates


def out_size(size, kernel, pad, stride):
    return (size + 2 * pad - kernel) // stride + 1


def flops(shape):
    """(forward, backward) floating-point operations of one Convolution layer pass."""
    _, batch, (c, h, w), m, k, pad, stride, group, needs_dx = shape
    fwd = 2 * batch * m * (c // group) * k * k * out_size(h, k, pad, stride) * \
        out_size(w, k, pad, stride)
    return fwd, fwd * (2 if needs_dx else 1)


def make_conv(batch, chw, num_output, kernel, pad, stride, group, dtype):
    param = caffe_pb2.LayerParameter()
    text_format.Parse(f'name: "conv" type: "Convolution" bottom: "x" top: "y" '
                      f"convolution_param {{ num_output: {num_output} kernel_size: {kernel} "
                      f"pad: {pad} stride: {stride} group: {group} "
                      f'weight_filler {{ type: "xavier" }} }}', param)
    layer = create_layer(param, TRAIN, dtype)
    bottom, top = [Blob((batch,) + chw, dtype)], [Blob((), dtype)]
    rng = np.random.default_rng(0)
    bottom[0].data[...] = rng.standard_normal(bottom[0].shape)
    layer.setup(bottom, top)
    layer.blobs[0].data[...] = rng.standard_normal(layer.blobs[0].shape) * 0.1
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    return layer, bottom, top


def caffe_passes(shape, dtype):
    """(forward, backward) callables of caffe-lite's Convolution layer on one shape."""
    _, batch, chw, m, k, pad, stride, group, needs_dx = shape
    layer, bottom, top = make_conv(batch, chw, m, k, pad, stride, group, dtype)
    return (lambda: layer.forward(bottom, top),
            lambda: layer.backward(top, [needs_dx], bottom))


def torch_passes(shape, dtype):
    """(forward, backward) callables of PyTorch's conv2d on one shape."""
    import torch
    import torch.nn.functional as F
    _, batch, chw, m, k, pad, stride, group, needs_dx = shape
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    x = torch.randn((batch,) + chw, dtype=tdtype, requires_grad=needs_dx)
    w = torch.randn((m, chw[0] // group, k, k), dtype=tdtype, requires_grad=True)
    b = torch.zeros(m, dtype=tdtype, requires_grad=True)
    dy = torch.randn((batch, m, out_size(chw[1], k, pad, stride),
                      out_size(chw[2], k, pad, stride)), dtype=tdtype)
    out = {}

    def forward():
        x.grad = w.grad = b.grad = None
        out["y"] = F.conv2d(x, w, b, stride=stride, padding=pad, groups=group)

    def backward():
        out["y"].backward(dy)
    return forward, backward


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


def measure(kind, shapes, reps, dtype, gate):
    """{layer name: [[forward s, backward s] per repetition]} for one framework ("caffe" or
    "torch"), in this process alone; None for torch when it does not import."""
    if kind == "torch":
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(2)
    times = {}
    for shape in shapes:
        forward, backward = (torch_passes if kind == "torch" else caffe_passes)(shape, dtype)
        for _ in range(3):
            forward()
            backward()
        times[shape[0]] = []
        for _ in range(reps):
            if gate:
                wait_idle()
                # untimed: the first call after an idle spell pays for waking the virtual
                # CPUs (measured 2x slower on these VMs), which a training loop never sees
                forward()
                backward()
            times[shape[0]].append([timed(forward), timed(backward)])
    return times


def measure_peak(reps, dtype):
    """The best rate, FLOP/s, of square GEMMs through NumPy's BLAS on all its threads."""
    rng = np.random.default_rng(0)
    rates = []
    for n in PEAK_GEMMS:
        a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
        c = np.empty_like(a)
        np.matmul(a, b, out=c)
        best = min(timed(lambda: np.matmul(a, b, out=c)) for _ in range(max(3, reps // 2)))
        rates.append(2 * n ** 3 / best)
    return max(rates)


def spawn(kind, nets, reps, dtype, gate):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--nets", nets,
           "--reps", str(reps), "--dtype", dtype] + (["--gate"] if gate else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.stderr.write(proc.stderr[-4000:])
    raise RuntimeError(f"{kind} worker failed (exit {proc.returncode})")


def pass_cells(seconds, work, peak):
    """Table cells of one pass: min / median ms, GFLOP/s and share of the peak (minimum)."""
    best, med = min(seconds), float(np.median(seconds))
    return f" {best * 1e3:.2f} / {med * 1e3:.2f} | {work / best / 1e9:.1f} | " \
        f"{100 * work / best / peak:.0f}% |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions per layer, in all")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating caffe-lite / PyTorch processes, reps split among them")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--gate", action="store_true",
                    help="wait for an idle machine before each repetition (the wake-up after "
                         "the idle spell then slows the next calls; see the module doc)")
    ap.add_argument("--worker", choices=["caffe", "torch", "peak"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    dtype = np.dtype(args.dtype)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    for n in names:
        if n not in NETS:
            ap.error(f"unknown net {n!r} (known: {', '.join(NETS)})")
    shapes = [shape for n in names for shape in NETS[n]]
    if args.worker == "peak":
        print("RESULT " + json.dumps(measure_peak(args.reps, dtype)))
        return
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, shapes, args.reps, dtype, args.gate)))
        return
    rounds = max(1, min(args.rounds, args.reps))
    per_round = [args.reps * (i + 1) // rounds - args.reps * i // rounds for i in range(rounds)]
    t_ours = {shape[0]: [] for shape in shapes}
    t_torch = {shape[0]: [] for shape in shapes}
    peaks = []
    have_torch = True
    for reps in per_round:
        peaks.append(spawn("peak", args.nets, reps, args.dtype, False))
        for kind, into in (("caffe", t_ours), ("torch", t_torch)):
            if kind == "torch" and not have_torch:
                continue
            result = spawn(kind, args.nets, reps, args.dtype, args.gate)
            if result is None:
                have_torch = False
                continue
            for name, values in result.items():
                into[name].extend(values)
    peak = max(peaks)

    print(f"Convolution layer, forward and backward timed apart, {dtype.name}, "
          f"{args.reps} repetitions in {rounds} alternating rounds, each framework in its own "
          "process" + ("" if have_torch else "; PyTorch not installed"))
    sizes = " and ".join(f"{n}^3" for n in PEAK_GEMMS)
    print(f"Peak: {peak / 1e9:.1f} GFLOP/s, the best {sizes} GEMM through NumPy's BLAS "
          f"(rounds: {', '.join(f'{p / 1e9:.1f}' for p in peaks)})")
    print("| layer | batch | pass | GFLOP | caffe-lite ms (min / median) | GFLOP/s | of peak | "
          "PyTorch ms (min / median) | GFLOP/s | of peak | ratio (min / median) |")
    print("|" + "---|" * 11)
    sums = np.zeros((2, 2))   # (caffe-lite, PyTorch) x (min, median), forward + backward
    for shape in shapes:
        name, batch = shape[0], shape[1]
        for p, (pass_name, work) in enumerate(zip(("forward", "backward"), flops(shape))):
            ours = [t[p] for t in t_ours[name]]
            line = f"| {name} | {batch} | {pass_name} | {work / 1e9:.3f} |"
            line += pass_cells(ours, work, peak)
            sums[0] += min(ours), np.median(ours)
            if have_torch:
                theirs = [t[p] for t in t_torch[name]]
                sums[1] += min(theirs), np.median(theirs)
                line += pass_cells(theirs, work, peak)
                line += f" {min(ours) / min(theirs):.2f} / " \
                    f"{np.median(ours) / np.median(theirs):.2f} |"
            else:
                line += " n/a | n/a | n/a | n/a |"
            print(line)
    if have_torch:
        print(f"| all (sums) | | | | {sums[0, 0] * 1e3:.1f} / {sums[0, 1] * 1e3:.1f} | | | "
              f"{sums[1, 0] * 1e3:.1f} / {sums[1, 1] * 1e3:.1f} | | | "
              f"{sums[0, 0] / sums[1, 0]:.2f} / {sums[0, 1] / sums[1, 1]:.2f} |")


if __name__ == "__main__":
    main()
