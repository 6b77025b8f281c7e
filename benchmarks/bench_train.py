"""Training throughput: forward + backward + SGD update per iteration, float32, against PyTorch.

    python benchmarks/bench_train.py [--nets lenet,cifar10_quick,...] [--iters 10] [--warmup 3]
    python benchmarks/bench_train.py --profile minivggnet      # per-layer fwd/bwd ms
    python benchmarks/bench_train.py --json bench_train.json   # also the medians, for plot_bench.py

A second table times the TEST-phase forward (deployment) at batch 1 and at the training
batch: caffe-lite's TEST net, forward only (Net(forward_only=True), as a solver's test nets
and `caffe-lite test` run: nothing kept for a backward), against PyTorch's model.eval() under
torch.inference_mode(); each side's warm-up and timed calls each last at least
TEST_MIN_SECONDS (a fast forward then gets hundreds of calls, not 10).

Each net's TRAIN phase runs with its data layers replaced by Input layers of the data layer's
batch and image shape, filled once with random N(0, 1) inputs and random labels. One iteration
is SGDSolver.step(1) (clear diffs, forward, backward, momentum 0.9 + weight decay 5e-4, update)
in caffe-lite, and zero_grad + forward + backward + torch.optim.SGD.step in PyTorch
(benchmarks/torch_from_prototxt.py builds the same net as torch.nn, torch.set_num_threads(2)).
Warm-up iterations (Numba compilation, allocation) are excluded; the table gives the median
of the timed ones. Every (net, framework) runs in its own subprocess, so the peak RSS
(getrusage ru_maxrss) is that run's alone and the frameworks' thread pools never meet; the
two frameworks' runs alternate, --rounds times each, and their iterations are pooled, so a
slow spell of a shared machine hits both columns rather than one.
The ratio is PyTorch time / caffe-lite time: 1.0 is parity, 0.5 means PyTorch takes half as
long. Without torch the PyTorch columns read n/a ("PyTorch not installed").
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (train prototxt, image shape C, H, W, batch: None = the data layer's). The last two
# come from ../shared/corpus (skipped where it is absent): BVLC's CaffeNet at batch 16 and
# TI's imagenet_mobilenet-0.5 (depthwise convolutions) at batch 8.
NETS = {
    "lenet": ("models/lenet/lenet_train_test.prototxt", (1, 28, 28), None),
    "cifar10_quick": ("models/cifar10_quick/cifar10_quick_train_test.prototxt", (3, 32, 32),
                      None),
    "minivggnet": ("models/minivggnet/train_val_3_miniVggNet.prototxt", (3, 32, 32), None),
    "jacintonet11": ("models/jacintonet11v2_cifar10/train.prototxt", (3, 32, 32), None),
    "caffenet": ("../shared/corpus/bvlc/models/bvlc_reference_caffenet/train_val.prototxt",
                 (3, 227, 227), 16),
    "mobilenet-0.5": ("../shared/corpus/jacinto-models/caffe-0.17/trained/image_classification/"
                      "imagenet_mobilenet-0.5/initial/train.prototxt", (3, 224, 224), 8),
}
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData"}
SOLVER = dict(base_lr=0.001, momentum=0.9, weight_decay=0.0005)


def input_net_param(name, phase="TRAIN", batch=None):
    """(NetParameter of the `phase` net with Input layers for its data layers, batch, number
    of classes). `batch` replaces the data layer's (and the net's own override in NETS)."""
    from caffe_lite.common import TEST, TRAIN
    from caffe_lite.io.netstate import filter_net
    from caffe_lite.io.prototxt import read_net_param

    path, chw, net_batch = NETS[name]
    full = read_net_param(str(ROOT / path))
    full.state.phase = TRAIN if phase == "TRAIN" else TEST
    param = filter_net(full, full.state)
    if not any(lp.type in DATA_TYPES for lp in param.layer):
        # a train-only file (TI's): its TEST phase has no data layer, so the TEST forward
        # runs the training layers (BatchNorm, Dropout behave by the phase of the Net)
        full.state.phase = TRAIN
        param = filter_net(full, full.state)
    batch = batch or net_batch
    for lp in param.layer:
        if lp.type not in DATA_TYPES:
            continue
        if batch is None:
            batch = {"Data": lp.data_param.batch_size,
                     "ImageData": lp.image_data_param.batch_size,
                     "HDF5Data": lp.hdf5_data_param.batch_size}.get(lp.type)
        tops, lname = list(lp.top), lp.name
        lp.Clear()
        lp.name, lp.type = lname, "Input"
        lp.top.extend(tops)
        lp.input_param.shape.add().dim.extend((batch,) + chw)
        for _ in tops[1:]:
            lp.input_param.shape.add().dim.append(batch)
    # the classifier: the last InnerProduct, or the last Convolution (MobileNet's 1x1 one)
    outputs = [lp.inner_product_param.num_output for lp in param.layer
               if lp.type == "InnerProduct"] or [lp.convolution_param.num_output
                                                 for lp in param.layer
                                                 if lp.type == "Convolution"]
    return param, batch, outputs[-1]


def available(name):
    return (ROOT / NETS[name][0]).is_file()


def random_inputs(param, batch, classes, seed=0):
    """{top: array} for every Input top: images N(0, 1), labels uniform over the classes."""
    rng = np.random.default_rng(seed)
    out = {}
    for lp in param.layer:
        if lp.type != "Input":
            continue
        for top, shape in zip(lp.top, lp.input_param.shape):
            dims = tuple(shape.dim)
            if len(dims) == 1:
                out[top] = rng.integers(0, classes, dims).astype(np.float32)
            else:
                out[top] = rng.standard_normal(dims, dtype=np.float32)
    return out


def make_solver(param):
    from caffe_lite.proto import caffe_pb2
    from caffe_lite.solvers import get_solver
    sp = caffe_pb2.SolverParameter(lr_policy="fixed", display=0, max_iter=10 ** 9,
                                   random_seed=1, type="SGD", **SOLVER)
    sp.train_net_param.CopyFrom(param)
    return get_solver(sp)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- workers (one subprocess each) --------------------------------------------------------
def time_solver_steps(solver, param, batch, classes, iters, warmup):
    """Seconds of each of `iters` single solver steps on fixed random inputs, after `warmup`."""
    for top, arr in random_inputs(param, batch, classes).items():
        solver.net.blobs[top].data[...] = arr
    for _ in range(warmup):
        solver.step(1)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        solver.step(1)
        times.append(time.perf_counter() - t)
    return times


#: least wall time of a TEST-forward measurement (warm-up and timed calls each): a forward of
#: LeNet or cifar10_quick at batch 1 takes 0.2-0.6 ms, so 10 calls spanned 5 ms, and one
#: slow spell of the shared machine moved a run's median by 40%
TEST_MIN_SECONDS = 0.25


def timed_calls(fn, iters, warmup, min_seconds=0.0):
    """The times of `iters` calls of fn after `warmup` untimed ones; with min_seconds, each
    phase goes on until it has also lasted that long."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < min_seconds:
        fn()
        done += 1
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def run_caffe(name, iters, warmup):
    from caffe_lite.common import TEST
    from caffe_lite.net import Net
    param, batch, classes = input_net_param(name)
    times = time_solver_steps(make_solver(param), param, batch, classes, iters, warmup)
    test = {}
    for b in (1, batch):            # deployment: TEST phase, batch 1 and the training batch
        tparam, _, _ = input_net_param(name, "TEST", b)
        # forward only, as PyTorch's inference_mode: nothing kept for a backward
        net = Net(param=tparam, phase=TEST, forward_only=True)
        for layer in net.layers:    # PyTorch's fresh running statistics: mean 0, variance 1
            if layer.type == "BatchNorm":
                layer.blobs[1].data[...] = 1
                layer.blobs[2].data[...] = 1
        for top, arr in random_inputs(tparam, b, classes).items():
            net.blobs[top].data[...] = arr
        test[str(b)] = timed_calls(net.forward, iters, warmup, TEST_MIN_SECONDS)
    return {"batch": batch, "times": times, "test": test, "rss": peak_rss_mb()}


def run_torch(name, iters, warmup):
    try:
        import torch
    except ImportError:
        return {"error": "PyTorch not installed"}
    from benchmarks.torch_from_prototxt import TorchNet, make_optimizer
    torch.set_num_threads(2)
    torch.manual_seed(1)
    param, batch, classes = input_net_param(name)
    model = TorchNet(param)
    model.train()
    opt = make_optimizer(model, SOLVER["base_lr"], SOLVER["momentum"], SOLVER["weight_decay"])
    inputs = {k: torch.from_numpy(v) for k, v in random_inputs(param, batch, classes).items()}

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model(inputs)
        loss.backward()
        opt.step()
    times = timed_calls(step, iters, warmup)
    test = {}
    for b in (1, batch):            # deployment: eval mode under inference_mode
        tparam, _, _ = input_net_param(name, "TEST", b)
        tmodel = TorchNet(tparam)
        tmodel.eval()
        tinputs = {k: torch.from_numpy(v)
                   for k, v in random_inputs(tparam, b, classes).items()}
        with torch.inference_mode():
            test[str(b)] = timed_calls(lambda: tmodel(tinputs), iters, warmup,
                                       TEST_MIN_SECONDS)
    return {"batch": batch, "times": times, "test": test, "rss": peak_rss_mb(),
            "version": torch.__version__}


def worker(kind, name, iters, warmup):
    result = (run_caffe if kind == "caffe" else run_torch)(name, iters, warmup)
    print("RESULT " + json.dumps(result))


def spawn(kind, name, iters, warmup):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, name,
           "--iters", str(iters), "--warmup", str(warmup)]
    return worker_result(cmd, f"{kind} worker for {name}")


def worker_result(cmd, what):
    """Run a worker subprocess and return the JSON of its "RESULT " line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.stderr.write(proc.stderr[-4000:])
    raise RuntimeError(f"{what} failed (exit {proc.returncode})")


# --- per-layer profile --------------------------------------------------------------------
def layer_flops(layer, bottom, top):
    """Forward multiply-add FLOPs of a Convolution / InnerProduct (else 0)."""
    if layer.type not in ("Convolution", "InnerProduct", "Deconvolution") or not top:
        return 0
    src = bottom[0] if layer.type == "Deconvolution" else top[0]
    axis = 1
    return 2 * layer.blobs[0].count * (src.count // src.shape[axis])


def torch_layer_times(layer, bottom, top, needs_dx, iters):
    """(fwd ms, bwd ms) of the same Convolution / InnerProduct in PyTorch (median), or None."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(2)
    x = torch.randn(bottom[0].shape, requires_grad=needs_dx)
    w = torch.randn(layer.blobs[0].shape, requires_grad=True)
    b = torch.zeros(layer.blobs[1].shape, requires_grad=True) if len(layer.blobs) > 1 \
        else None
    if layer.type == "Convolution":
        geo = layer.geometry
        kw = dict(stride=(geo.stride_h, geo.stride_w), padding=(geo.pad_h, geo.pad_w),
                  dilation=(geo.dilation_h, geo.dilation_w), groups=geo.group)

        def fwd():
            return F.conv2d(x, w, b, **kw)
    else:
        p = layer.param.inner_product_param

        def fwd():
            return F.linear(x.flatten(p.axis), w.t() if p.transpose else w, b)
    wanted = [t for t in (x, w, b) if t is not None and t.requires_grad]
    dy = torch.randn(fwd().shape)
    tf, tb = [], []
    for i in range(iters + 2):
        t = time.perf_counter()
        y = fwd()
        t1 = time.perf_counter()
        torch.autograd.grad(y, wanted, dy)
        t2 = time.perf_counter()
        if i >= 2:
            tf.append(t1 - t)
            tb.append(t2 - t1)
    return float(np.median(tf)) * 1e3, float(np.median(tb)) * 1e3


def profile(name, iters, warmup, with_torch=True):
    from caffe_lite.threads import blas_single_threaded
    param, batch, classes = input_net_param(name)
    solver = make_solver(param)
    net = solver.net
    for top, arr in random_inputs(param, batch, classes).items():
        net.blobs[top].data[...] = arr
    for _ in range(warmup):
        solver.step(1)
    n = len(net.layers)
    fwd = np.zeros((iters, n))
    bwd = np.zeros((iters, n))
    upd = np.zeros(iters)
    total = np.zeros(iters)
    clock = time.perf_counter
    with blas_single_threaded():            # as Solver.step runs a pass
        for it in range(iters):
            t_start = clock()
            net.clear_param_diffs()
            for i, layer in enumerate(net.layers):
                t = clock()
                layer.forward(net.bottom_vecs[i], net.top_vecs[i])
                fwd[it, i] = clock() - t
            for i in range(n - 1, -1, -1):
                if net.layer_need_backward[i]:
                    t = clock()
                    net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i],
                                           net.bottom_vecs[i])
                    bwd[it, i] = clock() - t
            t = clock()
            solver.apply_update()
            solver.iter += 1
            upd[it] = clock() - t
            total[it] = clock() - t_start
    f_med, b_med = np.median(fwd, 0) * 1e3, np.median(bwd, 0) * 1e3
    tot = float(np.median(total)) * 1e3
    theirs = {}
    if with_torch:
        for i, layer in enumerate(net.layers):
            if layer.type in ("Convolution", "InnerProduct"):
                needs_dx = any(net.bottom_need_backward[i])
                try:
                    theirs[i] = torch_layer_times(layer, net.bottom_vecs[i],
                                                  net.top_vecs[i], needs_dx, iters)
                except (RuntimeError, AttributeError, ValueError):
                    theirs[i] = None           # a shape F.conv2d / F.linear does not take
    have_torch = any(v is not None for v in theirs.values())
    if with_torch and theirs and not have_torch:
        print("PyTorch not installed")
    print(f"Per-layer time, {name}, batch {batch}, float32, median of {iters} iterations "
          f"(after {warmup} warm-up). GFLOP/s for Convolution / InnerProduct (backward: "
          "weight + bottom gradients)" + ("; PyTorch: the same layer alone, F.conv2d / "
                                          "F.linear + autograd" if have_torch else ""))
    head = "| layer | type | top shape | fwd ms | bwd ms | fwd GFLOP/s | bwd GFLOP/s | % |"
    if have_torch:
        head += " PyTorch fwd ms | PyTorch bwd ms | PyTorch GFLOP/s (fwd+bwd) |"
    print(head)
    print("|---|---|---|" + "---:|" * (head.count("|") - 4))
    for i, layer in enumerate(net.layers):
        top = net.top_vecs[i]
        flops = layer_flops(layer, net.bottom_vecs[i], top)
        shape = "x".join(map(str, top[0].shape)) if top else ""
        mult = 2 if any(net.bottom_need_backward[i]) else 1
        g_f = f"{flops / f_med[i] / 1e6:.1f}" if flops and f_med[i] else ""
        g_b = f"{mult * flops / b_med[i] / 1e6:.1f}" if flops and b_med[i] else ""
        pct = 100 * (f_med[i] + b_med[i]) / tot
        line = (f"| {net.layer_names[i]} | {layer.type} | {shape} | {f_med[i]:.2f} | "
                f"{b_med[i]:.2f} | {g_f} | {g_b} | {pct:.1f} |")
        if have_torch:
            t = theirs.get(i)
            if t is not None:
                line += (f" {t[0]:.2f} | {t[1]:.2f} | "
                         f"{(1 + mult) * flops / (t[0] + t[1]) / 1e6:.1f} |")
            else:
                line += " | | |"
        print(line)
    u = float(np.median(upd)) * 1e3
    rest = tot - f_med.sum() - b_med.sum() - u
    print(f"| (SGD update) | | | {u:.2f} | | | | {100 * u / tot:.1f} |" +
          (" | | |" if have_torch else ""))
    print(f"iteration {tot:.1f} ms = forward {f_med.sum():.1f} + backward {b_med.sum():.1f} "
          f"+ update {u:.1f} + other {rest:.1f}; {batch / tot * 1e3:.0f} img/s")
    by_type = {}
    for i, layer in enumerate(net.layers):
        by_type[layer.type] = by_type.get(layer.type, 0.0) + f_med[i] + b_med[i]
    print("by type: " + ", ".join(f"{t} {ms:.1f} ms ({100 * ms / tot:.0f}%)" for t, ms in
                                  sorted(by_type.items(), key=lambda kv: -kv[1])))
    if have_torch:
        ours = sum(f_med[i] + b_med[i] for i in theirs)
        ref = sum(sum(t) for t in theirs.values() if t is not None)
        print(f"Convolution + InnerProduct: caffe-lite {ours:.1f} ms, PyTorch {ref:.1f} ms "
              f"(the same layers alone), ratio {ours / ref:.2f}")


def pooled(runs):
    """One result from several runs of a worker: all timed iterations, the largest RSS."""
    out = dict(runs[0])
    out["times"] = [t for r in runs for t in r["times"]]
    out["test"] = {b: [t for r in runs for t in r["test"][b]] for b in runs[0]["test"]}
    out["rss"] = max(r["rss"] for r in runs)
    return out


# --- main ---------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: " +
                    ", ".join(NETS))
    ap.add_argument("--iters", type=int, default=10, help="timed iterations (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating caffe-lite / PyTorch runs per net, pooled (a slow spell "
                         "of a shared machine then hits both)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    ap.add_argument("--profile", metavar="NET", choices=list(NETS),
                    help="per-layer forward/backward breakdown of one net instead")
    ap.add_argument("--json", metavar="PATH",
                    help="also write the medians there, for benchmarks/plot_bench.py")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "NET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.iters, args.warmup)
        return
    if args.profile:
        profile(args.profile, args.iters, args.warmup, with_torch=not args.no_torch)
        return
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    for n in names:
        if n not in NETS:
            ap.error(f"unknown net {n!r} (known: {', '.join(NETS)})")
    for n in [n for n in names if not available(n)]:
        print(f"{n}: {NETS[n][0]} not found (../shared is absent), skipped")
        names.remove(n)
    have_torch = not args.no_torch
    if have_torch:
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            print("PyTorch not installed")
            have_torch = False
    rows = []
    for n in names:
        ours, theirs = [], []
        for _ in range(max(1, args.rounds)):
            ours.append(spawn("caffe", n, args.iters, args.warmup))
            if have_torch:
                theirs.append(spawn("torch", n, args.iters, args.warmup))
                if "error" in theirs[-1]:
                    print(theirs[-1]["error"])
                    have_torch, theirs = False, []
        rows.append((n, pooled(ours), pooled(theirs) if theirs else None))
    print(f"Training iteration (forward + backward + SGD update), float32, median of "
          f"{max(1, args.rounds)} x {args.iters} iterations, each run after {args.warmup} "
          f"warm-up; {os.cpu_count()} CPUs")
    print("| net | batch | caffe-lite img/s | ms/iter | PyTorch img/s | PyTorch ms/iter | "
          "ratio (PyTorch / caffe-lite time) | peak RSS caffe-lite | peak RSS PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, ours, theirs in rows:
        b = ours["batch"]
        t = float(np.median(ours["times"]))
        line = f"| {n} | {b} | {b / t:,.0f} | {t * 1e3:.1f} |"
        if theirs:
            tt = float(np.median(theirs["times"]))
            line += (f" {b / tt:,.0f} | {tt * 1e3:.1f} | {tt / t:.2f} | {ours['rss']:.0f} MB |"
                     f" {theirs['rss']:.0f} MB |")
        else:
            line += f" n/a | n/a | n/a | {ours['rss']:.0f} MB | n/a |"
        print(line)
    print()
    print("TEST-phase forward (deployment: caffe-lite's TEST net, PyTorch's eval() under "
          "inference_mode), median ms per forward")
    print("| net | batch | caffe-lite ms | PyTorch ms | ratio (PyTorch / caffe-lite time) |")
    print("|---|---:|---:|---:|---:|")
    for n, ours, theirs in rows:
        for b in ours["test"]:
            t = float(np.median(ours["test"][b]))
            line = f"| {n} | {b} | {t * 1e3:.2f} |"
            if theirs:
                tt = float(np.median(theirs["test"][b]))
                line += f" {tt * 1e3:.2f} | {tt / t:.2f} |"
            else:
                line += " n/a | n/a |"
            print(line)
    if args.json:
        write_summary(args.json, rows)


def summary(rows):
    """Each net's medians in seconds and peak RSS in MB; PyTorch's are None without it."""
    def med(times):
        return float(np.median(times))

    nets = []
    for n, ours, theirs in rows:
        nets.append({
            "net": n, "batch": ours["batch"],
            "train_s": med(ours["times"]),
            "torch_train_s": med(theirs["times"]) if theirs else None,
            "rss_mb": ours["rss"], "torch_rss_mb": theirs["rss"] if theirs else None,
            "test": [{"batch": int(b), "s": med(ours["test"][b]),
                      "torch_s": med(theirs["test"][b]) if theirs else None}
                     for b in ours["test"]],
        })
    return {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "nets": nets}


def write_summary(path, rows):
    with open(path, "w") as f:
        json.dump(summary(rows), f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
