#!/usr/bin/env python3
"""Long fuzz campaigns over caffe-lite's commands (issue #16; tests/test_fuzz.py is the short,
in-CI version of the same property).

    python tools/fuzz.py -cases 5000 -seed 0 [-jobs 2] [-timeout 60] [-report report.md]

Each case builds one damaged input in a temporary folder and runs the command a user would
(`python -m caffe_lite ...`, a subprocess, so that a signal or a hang is seen). A case passes
when the command exits 0, or exits 1 with exactly one `caffe-lite ...: error:` line that names
the damaged file (or the flag) and is not an `internal error`. Anything else is a DEFECT:
a signal (negative exit code), a timeout, an internal error, several error lines, a line
that does not name the input. The report gives the command, the seed, the counts per family
and every defect with its reproducer folder (kept under -keep).

Families: net_text, solver_text (byte edits of the bundled LeNet prototxts), caffemodel
(byte edits of a bundled caffemodel), solverstate and side_file (a LeNet-size snapshot,
damaged), lmdb (a small MNIST-shaped LMDB: bad records, truncation, overwritten pages), flags
(random values of every flag of `time`).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NET = ROOT / "tests" / "data" / "golden" / "lenet" / "net.prototxt"
SOLVER = ROOT / "models" / "lenet" / "lenet_solver.prototxt"
MODEL = ROOT / "tests" / "data" / "golden" / "layers_a" / "weights_init.caffemodel"
TINY_NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "db" batch_size: 4 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
TINY_SOLVER = ('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\n'
               'snapshot_prefix: "snap"\nrandom_seed: 1\nmomentum: 0.9\n')


def mutate(data, rng, edits=None):
    """Byte edits: replace, insert, delete or truncate at random places."""
    data = bytearray(data)
    for _ in range(edits or rng.randint(1, 8)):
        if not data:
            break
        i = rng.randrange(len(data))
        kind = rng.choice(("replace", "insert", "delete", "truncate", "flip"))
        if kind == "replace":
            data[i] = rng.randrange(256)
        elif kind == "insert":
            data.insert(i, rng.randrange(256))
        elif kind == "delete":
            del data[i]
        elif kind == "flip":
            data[i] ^= 1 << rng.randrange(8)
        else:
            del data[i:]
    return bytes(data)


def build_lmdb(folder, records):
    import lmdb
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(b"%08d" % i, value)
    env.close()


def datum(rng, good=True):
    from caffe_lite.proto import caffe_pb2
    d = caffe_pb2.Datum(channels=1, height=6, width=6, label=rng.randrange(3))
    d.data = bytes(rng.randrange(256) for _ in range(36))
    raw = d.SerializeToString()
    return raw if good else mutate(raw, rng, 2)


# --- families: each returns (argv, the name(s) of the input, one of which the error names) ---

def fam_net_text(folder, rng):
    (folder / "net.prototxt").write_bytes(mutate(NET.read_bytes(), rng))
    return ["upgrade_net_proto_text", "net.prototxt", "out.prototxt"], "net.prototxt"


def fam_solver_text(folder, rng):
    (folder / "solver.prototxt").write_bytes(mutate(SOLVER.read_bytes(), rng))
    return ["upgrade_solver_proto_text", "solver.prototxt", "out.prototxt"], "solver.prototxt"


def fam_caffemodel(folder, rng):
    (folder / "w.caffemodel").write_bytes(mutate(MODEL.read_bytes(), rng))
    return ["upgrade_net_proto_binary", "w.caffemodel", "out.caffemodel"], "w.caffemodel"


def _tiny_snapshot(folder, rng):
    build_lmdb(folder / "db", [datum(rng) for _ in range(16)])
    (folder / "net.prototxt").write_text(TINY_NET)
    (folder / "solver.prototxt").write_text(TINY_SOLVER)
    subprocess.run([sys.executable, "-m", "caffe_lite", "train", "-solver", "solver.prototxt"],
                   cwd=folder, capture_output=True, timeout=120, check=True)
    return folder / "snap_iter_2.solverstate"


def fam_solverstate(folder, rng):
    state = _tiny_snapshot(folder, rng)
    state.write_bytes(mutate(state.read_bytes(), rng))
    return (["train", "-solver", "solver.prototxt", "-snapshot", state.name, "-iterations", "3"],
            state.name)


def fam_side_file(folder, rng):
    state = _tiny_snapshot(folder, rng)
    side = Path(str(state) + ".rng.json")
    data = json.loads(side.read_text())
    key = rng.choice(sorted(data))
    data[key] = rng.choice([None, [], {}, -1, "x", 2 ** 70, [1, 2], {"a": None}, 1.5])
    text = json.dumps(data)
    side.write_text(text if rng.random() < 0.8 else text[: rng.randrange(len(text))])
    return (["train", "-solver", "solver.prototxt", "-snapshot", state.name, "-iterations", "3"],
            side.name)


def fam_lmdb(folder, rng):
    records = [datum(rng, good=rng.random() < 0.85) for _ in range(32)]
    build_lmdb(folder / "db", records)
    data_file = folder / "db" / "data.mdb"
    damage = rng.choice(("records", "truncate", "pages"))
    if damage == "truncate":
        os.truncate(data_file, rng.randrange(os.path.getsize(data_file)))
    elif damage == "pages":
        data = bytearray(data_file.read_bytes())
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(8192, len(data))
            data[i:i + 16] = bytes(rng.randrange(256) for _ in range(16))
        data_file.write_bytes(bytes(data))
    (folder / "net.prototxt").write_text(TINY_NET)
    command = rng.choice((["time", "-model", "net.prototxt", "-iterations", "3"],
                          ["compute_image_mean", "db", "mean.binaryproto"]))
    return command, "db"


FLAG_VALUES = ["", "-1", "0", "1", "2147483648", "99999999999999999999", "1e9", "nan", "TRAIN",
               "TEST", "x,y", "4G", "0M", "none", "-", "--", "\u00e9"]


def fam_flags(folder, rng):
    build_lmdb(folder / "db", [datum(rng) for _ in range(8)])
    (folder / "net.prototxt").write_text(TINY_NET)
    flag = rng.choice(["-iterations", "-level", "-phase", "-stage", "-max_memory", "-weights",
                       "-gpu", "-strict"])
    value = rng.choice(FLAG_VALUES)
    # the error names the flag, or the file a file flag was given
    return (["time", "-model", "net.prototxt", flag, value],
            (flag,) + ((value.split(",")[0],) if value.split(",")[0] else ()))


FAMILIES = {name[4:]: fn for name, fn in globals().items() if name.startswith("fam_")}


def _names(named):
    return (named,) if isinstance(named, str) else named


def run_case(index, seed, timeout, keep):
    rng = random.Random(f"{seed}-{index}")
    family = rng.choice(sorted(FAMILIES))
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{index}-"))
    try:
        argv, named = FAMILIES[family](folder, rng)
        try:
            proc = subprocess.run([sys.executable, "-m", "caffe_lite", *argv], cwd=folder,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return family, "DEFECT", f"timeout after {timeout} s: {' '.join(argv)}", folder
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("caffe-lite")]
        if proc.returncode == 0:
            verdict, why = "ok", ""
        elif proc.returncode < 0:
            verdict, why = "DEFECT", f"signal {-proc.returncode}"
        elif proc.returncode != 1:
            verdict, why = "DEFECT", f"exit code {proc.returncode}"
        elif len(lines) != 1:
            verdict, why = "DEFECT", f"{len(lines)} error lines"
        elif "internal error" in lines[0]:
            verdict, why = "DEFECT", lines[0]
        elif not any(name in lines[0] for name in _names(named)):
            verdict, why = "DEFECT", f"does not name {' or '.join(_names(named))}: {lines[0]}"
        else:
            verdict, why = "error", lines[0]
        if verdict == "DEFECT":
            why = f"{why} [{' '.join(argv)}]"
        return family, verdict, why, folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prefix_chars="-")
    ap.add_argument("-cases", type=int, default=200)
    ap.add_argument("-seed", type=int, default=0)
    ap.add_argument("-jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("-timeout", type=float, default=60)
    ap.add_argument("-report", default="")
    ap.add_argument("-keep", action="store_true", help="keep every case's folder")
    args = ap.parse_args(argv)
    start = time.time()
    counts, defects = {}, []
    with ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(lambda i: run_case(i, args.seed, args.timeout, args.keep),
                           range(args.cases))
        for done, (family, verdict, why, folder) in enumerate(results, 1):
            counts.setdefault(family, {"ok": 0, "error": 0, "DEFECT": 0})[verdict] += 1
            if verdict == "DEFECT":
                defects.append((family, why, folder))
                print(f"DEFECT {family}: {why}", file=sys.stderr)
            if done % 250 == 0:      # a long campaign shows where it is
                print(f"{done}/{args.cases} cases, {len(defects)} defects, "
                      f"{time.time() - start:.0f} s", file=sys.stderr, flush=True)
    lines = [f"`python tools/fuzz.py -cases {args.cases} -seed {args.seed} -jobs {args.jobs}`: "
             f"{args.cases} cases in {time.time() - start:.0f} s, {len(defects)} defects", "",
             "| family | cases | exit 0 | one clean error line | defects |",
             "|---|---:|---:|---:|---:|"]
    for family in sorted(counts):
        c = counts[family]
        lines.append(f"| {family} | {sum(c.values())} | {c['ok']} | {c['error']} | "
                     f"{c['DEFECT']} |")
    lines += [""] + [f"* DEFECT {f}: {w}" for f, w, _ in defects]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
