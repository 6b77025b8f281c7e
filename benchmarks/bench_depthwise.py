"""Depthwise convolution: the direct loops (kernels/depthwise_conv.py) against the lowered path
(im2col + one GEMM per channel, kernels/conv.py), forward + backward, on the depthwise layers
of TI's imagenet_mobilenet-0.5 at batch 8.

    python benchmarks/bench_depthwise.py [--reps 10] [--batch 8]

Both run in this process on caffe-lite's thread count, alternating layer by layer, so a slow
spell of the shared machine hits both; the table gives the median milliseconds of forward +
backward (weight, bias and data gradients) and the ratio lowered / direct.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffe_lite.kernels import conv, depthwise_conv  # noqa: E402
from caffe_lite.kernels.conv import ConvGeometry  # noqa: E402

# imagenet_mobilenet-0.5's depthwise 3x3 layers: (channels, input side, stride, how many)
LAYERS = [(16, 112, 1, 1), (32, 112, 2, 1), (64, 56, 1, 1), (64, 56, 2, 1), (128, 28, 1, 1),
          (128, 28, 2, 1), (256, 14, 1, 5), (256, 14, 2, 1), (512, 7, 1, 1)]

PATHS = {"lowered": (conv.conv2d_forward, conv.conv2d_backward),
         "direct": (depthwise_conv.depthwise_forward, depthwise_conv.depthwise_backward)}


def pass_time(path, x, w, b, dy, geo):
    forward, backward = PATHS[path]
    y = np.empty(dy.shape, x.dtype)
    dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
    start = time.perf_counter()
    forward(x, w, b, geo, y)
    backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"depthwise 3x3, batch {args.batch}, float32, forward + backward, median of "
          f"{args.reps} (ms)")
    print(f"  {'layer':<22} {'lowered':>9} {'direct':>9} {'lowered/direct':>15}")
    totals = {"lowered": 0.0, "direct": 0.0}
    for channels, side, stride, count in LAYERS:
        geo = ConvGeometry(3, 3, 1, 1, stride, stride, 1, 1, channels)
        out = (side + 2 - 3) // stride + 1
        x = rng.standard_normal((args.batch, channels, side, side)).astype(np.float32)
        w = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
        b = rng.standard_normal(channels).astype(np.float32)
        dy = rng.standard_normal((args.batch, channels, out, out)).astype(np.float32)
        times = {path: [] for path in PATHS}
        for path in PATHS:                                # warm-up (and Numba's cache load)
            pass_time(path, x, w, b, dy, geo)
        for _ in range(args.reps):
            for path in PATHS:
                times[path].append(pass_time(path, x, w, b, dy, geo))
        med = {path: statistics.median(t) * 1e3 for path, t in times.items()}
        for path in PATHS:
            totals[path] += med[path] * count
        name = f"{channels}x{side}x{side} s{stride}" + (f" (x{count})" if count > 1 else "")
        print(f"  {name:<22} {med['lowered']:9.2f} {med['direct']:9.2f} "
              f"{med['lowered'] / med['direct']:15.2f}", flush=True)
    print(f"  {'all 13 layers':<22} {totals['lowered']:9.2f} {totals['direct']:9.2f} "
          f"{totals['lowered'] / totals['direct']:15.2f}")


if __name__ == "__main__":
    main()
