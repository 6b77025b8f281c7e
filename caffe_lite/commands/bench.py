"""`caffe-lite bench BENCHMARK [flags]`: benchmarks of caffe-lite's kernels on a model.

    caffe-lite bench sparse -model M [-weights W] [-sparsity 0,0.5,0.7,0.8,0.9,0.95,0.99]
                            [-pattern random|rows|columns|blocks] [-batch N] [-modes ...]
                            [-reps 5] [-warmup 2] [-seed 0] [-csv out.csv] [-o plot.png]

`sparse` (issue #11; caffe_lite/bench/sparse.py has the method): for every Convolution and
InnerProduct layer, the forward time of each SSL conv_mode (and SciPy's CSR product as the
reference) against dense GEMM measured in the same run, lowering included, after a warm-up;
the speed-ups; and the whole-net forward per mode (TOTAL: Convolutions in the mode,
InnerProducts dense). Without -weights the weights are random and pruned to each -sparsity in
the -pattern; with -weights the model's own zeros are measured (one point per layer, pattern
`model`) and where they lie is printed. The net runs in TEST phase; its data layers become
Input layers of -batch random images (bench/inputs.py), so no LMDB is needed when a deploy
net or a crop_size gives the input shape. A table on stdout; -csv writes the rows
(CSV_COLUMNS); -o plots speed-up against sparsity (the `plot` extra). Threads: caffe-lite's
(CAFFE_LITE_NUM_THREADS, else every core this process may use), printed in the header.
"""
import os

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..errors import CaffeError
from .netflags import STRICT_FLAG, strict_fork_fields

DEFAULT_SPARSITY = "0,0.5,0.7,0.8,0.9,0.95,0.99"
DEFAULT_PATTERN = "random"
BENCHMARKS = ("sparse",)
ALL_MODES = ("LOWERED_GEMM,LOWERED_CSRMM,LOWERED_CCNMM,DIRECT_SCONV,DIRECT_DCONV,"
             "SCIPY_CSR,IM2COL_GEMM")

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "Optional; trained weights (caffemodel): measure the model's "
                             "own zeros instead of pruning random weights."),
    Flag("sparsity", DEFAULT_SPARSITY, str, "Fractions of zero weights to prune random "
                                            "weights to, in [0, 1), separated by ','."),
    Flag("pattern", DEFAULT_PATTERN, str, "Where the pruned zeros lie: random (elements), "
                                          "rows (filters), columns (per group) or blocks "
                                          "(4x4 tiles per group)."),
    Flag("batch", 0, int, "Images per forward; 0 keeps the model's own batch."),
    Flag("modes", ALL_MODES, str, "Modes to time, separated by ','; LOWERED_GEMM (dense) is "
                                  "always measured as the baseline."),
    Flag("reps", 5, int, "Timed forwards per mode; the median is reported."),
    Flag("warmup", 2, int, "Untimed forwards per mode first (compilation, weight caches)."),
    Flag("seed", 0, int, "Seed of the random weights, pruning and inputs."),
    Flag("csv", "", str, "Optional; write the rows to this CSV file."),
    Flag("o", "", str, "Optional; plot speed-up against sparsity to this image (png, pdf, "
                       "svg)."),
    STRICT_FLAG,
]


@command("bench", "benchmark caffe-lite's kernels on a model (sparse: SSL's sparse "
         "convolution modes against dense)", "sparse -model MODEL [flags]")
def bench(argv):
    values, positional = parse_flags(argv, FLAGS)
    if not positional:
        raise CaffeError(f"which benchmark? (benchmarks: {', '.join(BENCHMARKS)}): "
                         f"caffe-lite bench sparse -model MODEL")
    if positional[0] not in BENCHMARKS:
        raise CaffeError(f"unknown benchmark '{positional[0]}' "
                         f"(benchmarks: {', '.join(BENCHMARKS)})")
    if len(positional) > 1:
        raise unexpected_argument(positional, 1)
    with strict_fork_fields(values["strict"]):
        return sparse(values)


def parse_sparsities(text):
    """Sorted distinct fractions in [0, 1) from '0,0.5,...'."""
    out = set()
    for item in text.split(","):
        item = item.strip()
        try:
            s = float(item)
        except ValueError:
            raise CaffeError(f"-sparsity: '{item}' is not a number") from None
        if not 0 <= s < 1:
            raise CaffeError(f"-sparsity: {item} is outside [0, 1)")
        out.add(s)
    return sorted(out)


def parse_modes(text):
    from ..bench.sparse import MODES
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise CaffeError("-modes: no mode given")
    for m in modes:
        if m not in MODES:
            raise CaffeError(f"-modes: unknown mode '{m}' (modes: {', '.join(MODES)})")
    return list(dict.fromkeys(modes))


def _check_output(flag, path):
    folder = os.path.dirname(path) or "."
    if path and not os.path.isdir(folder):
        raise CaffeError(f"-{flag}: no such folder '{folder}'", path)


def _checked(values):
    from ..bench.prune import PATTERNS
    if not values["model"]:
        raise CaffeError("Need a model definition to benchmark (-model).")
    if values["pattern"] not in PATTERNS:
        raise CaffeError(f"-pattern: unknown pattern '{values['pattern']}' "
                         f"(patterns: {', '.join(PATTERNS)})")
    if values["weights"] and (values["sparsity"] != DEFAULT_SPARSITY
                              or values["pattern"] != DEFAULT_PATTERN):
        raise CaffeError("-sparsity and -pattern prune random weights; with -weights the "
                         "model's own zeros are measured: give one or the other")
    for name, low in (("batch", 0), ("reps", 1), ("warmup", 1), ("seed", 0)):
        if values[name] < low:
            raise CaffeError(f"-{name} must be >= {low}, got {values[name]}")
    if values["o"]:
        from ..bench.report import figure_class
        figure_class()                  # no matplotlib: say so before the long run
    _check_output("csv", values["csv"])
    _check_output("o", values["o"])
    return parse_sparsities(values["sparsity"]), parse_modes(values["modes"])


def sparse(values):
    sparsities, modes = _checked(values)
    import numpy as np
    from .. import threads
    from ..bench import report
    from ..bench.inputs import bench_net, fill_inputs
    from ..bench.sparse import bench_sparse
    net, labels = bench_net(values["model"], values["batch"])
    own = bool(values["weights"])
    if own:
        net.copy_from(values["weights"])
    fill_inputs(net, labels, np.random.default_rng([values["seed"], 1]))
    result = bench_sparse(net, sparsities, values["pattern"], modes, reps=values["reps"],
                          warmup=values["warmup"], seed=values["seed"], own_weights=own)
    source = values["model"] + (f" with {values['weights']}" if own else "")
    header = (f"bench sparse: {source}, batch {result.batch}, {threads.get_num_threads()} "
              f"threads; forward ms, median of {values['reps']} after {values['warmup']} "
              f"warm-up, lowering included; TOTAL = net forward, Convolutions in the mode, "
              f"InnerProducts dense")
    print(header)
    if own:
        print("\nwhere the model's own zeros lie (fractions)")
        print(report.format_structure(result.structures))

    def title(group):
        if own:
            return "the model's own zeros (pattern model)"
        return f"sparsity {group[0].sparsity:g}, pattern {values['pattern']}"
    print()
    print(report.format_table(result.rows, title))
    if values["csv"]:
        report.write_csv(result.rows, values["csv"])
    if values["o"]:
        fig = report.build_figure(
            result.rows, f"{os.path.basename(values['model'])}, batch {result.batch}, "
                         f"pattern {'model' if own else values['pattern']}")
        report.save_figure(fig, values["o"])
    return 0
