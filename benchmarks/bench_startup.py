"""Start-up: a one-iteration `caffe-lite train` of LeNet, with a cold and a warm Numba cache.

    python benchmarks/bench_startup.py [--reps 3] [--nets lenet,caffenet,...]

The net is models/lenet's with its Data layers replaced by DummyData of the same shapes (so
no database is read), the solver runs max_iter 1 with no test pass and no snapshot. Other
nets (`--nets`, the names of benchmarks/bench_train.py) get the same treatment from that
benchmark's table (its batch and image size). Each
repetition points NUMBA_CACHE_DIR at a new empty folder and runs the command twice: the
first run compiles every kernel the net uses (cold), the second loads them (warm). A third
run, on another empty folder, compiles them with the compile-ahead helper turned off
(CAFFE_LITE_COMPILE_AHEAD=0, caffe_lite/compile_ahead.py): the cold start as one process
compiles it. Wall seconds of the whole command (interpreter start to exit) and its peak RSS
(the larger of the command's and its helper's), each run in its own child process.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

_WRAPPER = """
import json, os, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def write_job(folder, name="lenet"):
    """The net with DummyData instead of its data layers, and a one-iteration solver."""
    from caffe_lite.io import fast_text
    from caffe_lite.io.prototxt import read_net_param

    if name != "lenet":
        net = _dummy_data(name)
    else:
        net = read_net_param(str(ROOT / "models/lenet/lenet_train_test.prototxt"))
    for lp in net.layer:
        if lp.type == "Data":
            batch = lp.data_param.batch_size
            tops, lname, include = list(lp.top), lp.name, list(lp.include)
            lp.Clear()
            lp.name, lp.type = lname, "DummyData"
            lp.top.extend(tops)
            lp.include.extend(include)
            dummy = lp.dummy_data_param
            dummy.shape.add().dim.extend([batch, 1, 28, 28])
            dummy.shape.add().dim.extend([batch])
            dummy.data_filler.add(type="gaussian", std=1.0)
            dummy.data_filler.add(type="constant", value=1.0)
    (folder / "net.prototxt").write_text(fast_text.to_string(net))
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\n'
        "max_iter: 1\ndisplay: 1\nsnapshot_after_train: false\nsolver_mode: CPU\n")


def _dummy_data(name):
    """bench_train's TRAIN net of `name`, its Input layers turned into DummyData."""
    from bench_train import input_net_param
    net, _, classes = input_net_param(name)
    for lp in net.layer:
        if lp.type != "Input":
            continue
        shapes = [list(shape.dim) for shape in lp.input_param.shape]
        lp.ClearField("input_param")
        lp.type = "DummyData"
        for i, dims in enumerate(shapes):
            lp.dummy_data_param.shape.add().dim.extend(dims)
            if i == 0:
                lp.dummy_data_param.data_filler.add(type="gaussian", std=1.0)
            else:                                   # labels: a valid class
                lp.dummy_data_param.data_filler.add(type="constant", value=classes - 1)
    return net


def run(folder, cache, ahead="1"):
    import os
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), CAFFE_LITE_COMPILE_AHEAD=ahead)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "caffe_lite", "train",
           "-solver", "solver.prototxt"]
    out = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit("caffe-lite train failed")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nets", default="lenet", help="comma-separated: lenet and the nets of "
                                                    "benchmarks/bench_train.py")
    args = ap.parse_args()
    for name in args.nets.split(","):
        runs = {"cold": [], "warm": [], "cold, one process": []}
        with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
            folder = Path(tmp)
            write_job(folder, name)
            for rep in range(args.reps):
                cache = folder / f"cache{rep}"
                cache.mkdir()
                runs["cold"].append(run(folder, cache))
                runs["warm"].append(run(folder, cache))
                alone = folder / f"alone{rep}"
                alone.mkdir()
                runs["cold, one process"].append(run(folder, alone, ahead="0"))
        print(f"one-iteration `caffe-lite train` of {name} (DummyData), {args.reps} "
              "repetitions")
        print(f"  {'cache':<17} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MB':>12}")
        for kind, results in runs.items():
            seconds = [r["seconds"] for r in results]
            print(f"  {kind:<17} {statistics.median(seconds):9.2f} {min(seconds):7.2f} "
                  f"{max(seconds):7.2f} {max(r['peak_rss_mb'] for r in results):12.0f}")


if __name__ == "__main__":
    main()
