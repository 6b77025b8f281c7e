"""What caffe-jacinto's sparsity and quantization cost a training step, against plain training.

    python benchmarks/bench_jacinto_hooks.py [--net jacintonet11] [--iters 8] [--warmup 3]
                                             [--rounds 3]

The net's TRAIN phase runs as in bench_train.py (data layers replaced by Input layers filled
once with N(0, 1) images and random labels; one iteration is SGDSolver.step(1) with momentum
0.9 and weight decay 5e-4). Variants, each a solver field set on the same net:

  plain          no fork field: the baseline, measured in the same run
  l1             regularization_type "L1"
  sparse         sparse_mode SPARSE_UPDATE, sparsity_target 0.8 with the TI files' schedule
                 (step every 1000 iterations, so a step time is the mask re-application),
                 display_sparsity 1000
  sparse_pass    the same with sparsity_step_iter 1 and sparsity_start_iter 0: a channel-wise
                 thresholding pass every iteration (the worst case; TI's files run one per
                 1000 iterations)
  quant_net      NetParameter quantize: true (caffe-jacinto 0.16/0.17): ranges and 8-bit
                 activations / 12-bit weights from the first pass
  quant_solver   insert_quantization_param with quantization_start_iter 1 (caffe-jacinto
                 G1/G2, dynamic fixed point on shadow weights)
  g1             weight_connect_mode WEIGHT_DISCONNECTED_ELTWISE, threshold_weights,
                 sparsity_threshold 1e-4, sparsity_target 0.8, sparsity_lr_mult 0.01

Each variant runs in its own subprocess; variants alternate, --rounds times, and their
iterations are pooled, so a slow spell of a shared machine hits every column. The table gives
the median step time and its ratio to plain (1.00 = no cost; the target is under 1.10).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import (NETS, SOLVER, input_net_param,  # noqa: E402
                                    time_solver_steps, worker_result)

VARIANTS = {
    "plain": "",
    "l1": 'regularization_type: "L1"',
    "sparse": "sparse_mode: SPARSE_UPDATE sparsity_target: 0.8 sparsity_step_factor: 0.02 "
              "sparsity_step_iter: 1000 sparsity_start_iter: 4000 display_sparsity: 1000",
    "sparse_pass": "sparse_mode: SPARSE_UPDATE sparsity_target: 0.8 "
                   "sparsity_step_factor: 0.001 sparsity_step_iter: 1 sparsity_start_iter: 0",
    "quant_net": None,   # NetParameter.quantize, set on the net
    "quant_solver": "insert_quantization_param: true quantization_start_iter: 1",
    "g1": "weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE threshold_weights: true "
          "sparsity_threshold: 1e-4 sparsity_target: 0.8 sparsity_lr_mult: 0.01",
}


def make_solver(param, variant):
    from google.protobuf import text_format
    from caffe_lite.proto import caffe_pb2
    from caffe_lite.solvers import get_solver
    sp = caffe_pb2.SolverParameter(lr_policy="fixed", display=0, max_iter=10 ** 9,
                                   random_seed=1, type="SGD", **SOLVER)
    if VARIANTS[variant]:
        text_format.Merge(VARIANTS[variant], sp)
    sp.train_net_param.CopyFrom(param)
    if variant == "quant_net":
        sp.train_net_param.quantize = True
    return get_solver(sp)


def run(name, variant, iters, warmup):
    param, batch, classes = input_net_param(name)
    solver = make_solver(param, variant)
    return {"times": time_solver_steps(solver, param, batch, classes, iters, warmup)}


def spawn(name, variant, iters, warmup):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--net", name,
           "--iters", str(iters), "--warmup", str(warmup)]
    return worker_result(cmd, f"worker {variant}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default="jacintonet11", choices=sorted(NETS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        result = run(args.net, args.worker, args.iters, args.warmup)
        print("RESULT " + json.dumps(result))
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "plain" not in variants:
        variants.insert(0, "plain")
    pooled = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            pooled[v].extend(spawn(args.net, v, args.iters, args.warmup)["times"])
            print(f"round {r + 1}/{args.rounds}: {v} done", file=sys.stderr, flush=True)
    base = float(np.median(pooled["plain"]))
    print(f"\n{args.net}: median ms per training step over {args.rounds} x {args.iters} "
          f"iterations\n")
    print("| variant | ms/iter | ratio to plain |")
    print("|---|---:|---:|")
    for v in variants:
        ms = float(np.median(pooled[v]))
        print(f"| {v} | {ms * 1e3:.1f} | {ms / base:.3f} |")


if __name__ == "__main__":
    main()
