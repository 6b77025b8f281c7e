"""Data layer throughput on a raw 28x28 MNIST-like LMDB (built here, in a temp directory).

    python benchmarks/bench_data.py [--records 20000] [--batch 64] [--epochs 10] [--all-cores]

Measures images/s for
  baseline   raw LMDB iteration (cursor over every value) and a NumPy copy of the same bytes
  (a)        reading + decoding: reader.next_value + Datum parse + batch assembly
  (b)        transform: DataTransformer (scale 1/256) on uint8 batches
  (c)        the layer end to end: Data.forward calls from one consumer thread, the
             prefetch thread producing
and peak RSS. By default the process is pinned to one core (the target is >= 20,000 images/s
on one core).
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import text_format  # noqa: E402

from caffe_lite.blob import Blob  # noqa: E402
from caffe_lite.common import TRAIN, set_random_seed  # noqa: E402
from caffe_lite.data.datum import array_to_datum  # noqa: E402
from caffe_lite.data.db import DBWriter, open_reader  # noqa: E402
from caffe_lite.layers import create_layer  # noqa: E402
from caffe_lite.proto import caffe_pb2  # noqa: E402


def build_db(path, records):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (records, 1, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, records)
    with DBWriter(path, "lmdb") as db:
        for i in range(records):
            db.put(f"{i:08d}", array_to_datum(images[i], labels[i]).SerializeToString())
    return images


def make_layer(source, batch):
    net = caffe_pb2.NetParameter()
    text_format.Parse(f"""layer {{ name: "mnist" type: "Data" top: "data" top: "label"
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}""", net)
    layer = create_layer(net.layer[0], TRAIN)
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


def best_rate(fn, images, repeat=3):
    """images/s of the fastest of `repeat` runs of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return images / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10, help="passes for the end-to-end run")
    ap.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = ap.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    set_random_seed(0)
    n, batch = args.records, args.batch
    n_batches = n // batch
    per_pass = n_batches * batch
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "mnist_like_lmdb")
        t0 = time.perf_counter()
        images = build_db(db, n)
        build_s = time.perf_counter() - t0

        # --- baselines -------------------------------------------------------------------
        reader = open_reader(db)

        def raw_lmdb():
            with reader.env.begin() as txn:
                for _ in txn.cursor().iternext(keys=False, values=True):
                    pass
        results["baseline: raw LMDB iteration"] = best_rate(raw_lmdb, n)
        flat = images.reshape(n, -1)
        dst = np.empty_like(flat)
        results["baseline: NumPy copy of the pixels"] = best_rate(
            lambda: np.copyto(dst, flat), n)

        # --- (a) read + decode, (b) transform -------------------------------------------
        layer, top = make_layer(db, batch)

        def read_decode():
            layer.reader.seek(0)
            for _ in range(n_batches):
                layer._decode([layer.reader.next_value() for _ in range(batch)])
        results["(a) read + decode"] = best_rate(read_decode, per_pass)
        batch_u8 = images[:batch]
        rng = np.random.default_rng(0)
        layer.transformer.transform(batch_u8, rng)        # compile / warm up
        results["(b) transform (scale 1/256)"] = best_rate(
            lambda: [layer.transformer.transform(batch_u8, rng) for _ in range(n_batches)],
            per_pass)

        # --- (c) end to end ----------------------------------------------------------------
        layer, top = make_layer(db, batch)
        layer.forward([], top)                             # start the prefetch thread
        steps = args.epochs * n_batches
        t0 = time.perf_counter()
        for _ in range(steps):
            layer.forward([], top)
        results["(c) Data layer forward, end to end"] = steps * batch / (time.perf_counter() - t0)
        layer.prefetcher.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"Data layer: {n} raw 1x28x28 records, batch {batch}, scale 1/256, "
          f"{cores} core(s), DB built in {build_s:.2f} s")
    for name, rate in results.items():
        print(f"  {name:<40} {rate:>14,.0f} images/s")
    print(f"  {'peak RSS':<40} {rss_mb:>14,.0f} MB")
    e2e = results["(c) Data layer forward, end to end"]
    print(f"  target 20,000 images/s on one core: {'met' if e2e >= 20000 else 'NOT met'}")


if __name__ == "__main__":
    main()
