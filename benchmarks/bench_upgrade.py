"""`caffe-lite upgrade_net_proto_text` on a ~50 MB net of ~763,000 small layers (built here).

    python benchmarks/bench_upgrade.py [--layers 763000] [--kinds v1,v2] [--reps 1]

Builds, in a temporary directory, the same chain of ReLU layers after an `input:` field in
two spellings:
  v1   `layers { name: "r1" type: RELU bottom: "r0" top: "r1" }`  (V1 -> V2 upgrade, ~54 MB)
  v2   `layer { name: "r1" type: "ReLU" bottom: "r0" top: "r1" }`  (input-field upgrade only)
and runs `python -m caffe_lite upgrade_net_proto_text IN OUT` on each in a child process
(this checkout's caffe_lite), printing its wall seconds and peak RSS: once with
CAFFE_LITE_NUM_THREADS=1 (the whole-net path, the baseline) and once on every core (slices of
layers in worker processes, io/parallel_upgrade.py), and the ratio of the two. Each command
runs under a small wrapper process of its own, so the wrapper's
resource.getrusage(RUSAGE_CHILDREN) is that command's alone. Both spellings upgrade to the
same net; the script checks that the outputs are identical. The machine is shared and noisy:
compare runs made together.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs argv[1:] as its only child and prints {"seconds", "peak_rss_mb"} of that child.
_WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": rc, "seconds": seconds, "peak_rss_mb": peak}))
"""


def write_net(path, kind, layers):
    """A chain of `layers` ReLU layers after `input: "data"`, in V1 or V2 spelling."""
    if kind == "v1":
        line = 'layers {{ name: "r{i}" type: RELU bottom: "{prev}" top: "r{i}" }}\n'
    else:
        line = 'layer {{ name: "r{i}" type: "ReLU" bottom: "{prev}" top: "r{i}" }}\n'
    with open(path, "w") as f:
        f.write('name: "bench_upgrade"\ninput: "data"\n'
                "input_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n")
        prev = "data"
        for i in range(layers):
            f.write(line.format(i=i, prev=prev))
            prev = f"r{i}"


def run_upgrade(src, dst, threads=None):
    env = dict(os.environ)
    env.pop("CAFFE_LITE_NUM_THREADS", None)
    if threads:
        env["CAFFE_LITE_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "caffe_lite",
           "upgrade_net_proto_text", str(src), str(dst)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"upgrade_net_proto_text {src} failed (exit {result['rc']})")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=763000)
    ap.add_argument("--kinds", default="v1,v2", help="comma-separated: v1, v2")
    ap.add_argument("--reps", type=int, default=1, help="runs of each kind (alternating)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        if kind not in ("v1", "v2"):
            raise SystemExit(f"unknown kind {kind!r} (v1 or v2)")
    with tempfile.TemporaryDirectory(prefix="bench_upgrade_") as tmp:
        tmp = Path(tmp)
        for kind in kinds:
            write_net(tmp / f"{kind}.prototxt", kind, args.layers)
        cores = len(os.sched_getaffinity(0))
        print(f"upgrade_net_proto_text, {args.layers:,} ReLU layers, {args.reps} run(s) each, "
              f"1 worker (whole-net path) against {cores} (every core)")
        print(f"  {'input':<6} {'MB in':>7} {'MB out':>7} {'workers':>8} {'seconds':>9} "
              f"{'peak RSS MB':>12} {'1 / N':>6}")
        for _ in range(args.reps):
            for kind in kinds:
                src = tmp / f"{kind}.prototxt"
                seconds = {}
                for workers in (1, cores):
                    dst = tmp / f"{kind}.{workers}.out.prototxt"
                    result = run_upgrade(src, dst, workers)
                    seconds[workers] = result["seconds"]
                    mb_in, mb_out = src.stat().st_size / 1e6, dst.stat().st_size / 1e6
                    ratio = f"{seconds[1] / seconds[workers]:6.2f}" if workers > 1 else ""
                    print(f"  {kind:<6} {mb_in:7.1f} {mb_out:7.1f} {workers:8d} "
                          f"{result['seconds']:9.2f} {result['peak_rss_mb']:12,.0f} {ratio}",
                          flush=True)
                same = (tmp / f"{kind}.1.out.prototxt").read_bytes() == \
                    (tmp / f"{kind}.{cores}.out.prototxt").read_bytes()
                print(f"  {kind}: 1 and {cores} workers wrote the same text: "
                      f"{'yes' if same else 'NO'}")
        if len(kinds) == 2:
            same = (tmp / f"v1.{cores}.out.prototxt").read_bytes() == \
                (tmp / f"v2.{cores}.out.prototxt").read_bytes()
            print(f"  v1 and v2 outputs identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
