"""Writing and reading one large BlobProto (a caffemodel's weights) against plain NumPy bytes.

    python benchmarks/bench_blob_io.py [--values 37748736] [--reps 5]

The default size is AlexNet's fc6 weights (4096 x 9216). Measured in the same run:
  write     array_to_blob_proto + SerializeToString   against   ndarray.tobytes
  read      BlobProto.FromString + blob_proto_to_array  against   np.frombuffer(...).copy()
The table gives the best of --reps for each and the ratio to its baseline. Extending
protobuf's repeated field value by value costs two to three orders of magnitude more than the
baseline (that is what the packed writer in io/blobs.py avoids); the ratios here stay near 10.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffe_lite.io import blobs  # noqa: E402
from caffe_lite.proto import caffe_pb2  # noqa: E402


def best_seconds(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=4096 * 9216)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    data = np.random.default_rng(0).standard_normal(args.values).astype(np.float32)
    raw = blobs.array_to_blob_proto(data).SerializeToString()
    plain = data.tobytes()

    def read():
        return blobs.blob_proto_to_array(caffe_pb2.BlobProto.FromString(raw))
    np.testing.assert_array_equal(read(), data)

    rows = [
        ("write", best_seconds(lambda: blobs.array_to_blob_proto(data).SerializeToString(),
                               args.reps),
         best_seconds(data.tobytes, args.reps)),
        ("read", best_seconds(read, args.reps),
         best_seconds(lambda: np.frombuffer(plain, np.float32).copy(), args.reps)),
    ]
    mb = data.nbytes / 2**20
    print(f"{args.values} float32 values ({mb:.0f} MiB), best of {args.reps}")
    print(f"{'':6} {'caffe-lite ms':>14} {'NumPy ms':>10} {'ratio':>7}")
    for name, ours, base in rows:
        print(f"{name:6} {ours * 1e3:14.1f} {base * 1e3:10.1f} {ours / base:7.2f}")


if __name__ == "__main__":
    main()
