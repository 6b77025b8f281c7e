"""`caffe-lite plot LOG -o curves.png`: training curves from a caffe-lite (or Caffe) log.

The log is read with the regexes of Caffe's tools/extra/parse_log.py (caffe_lite.log_parse);
lines may carry a prefix before the glog stamp. The figure has one panel for the train outputs
and one for the test outputs against the iteration (losses on the left axis, accuracies on a
right axis of their own), plus the learning rate. When the log has caffe-jacinto's
`display_sparsity` blocks (log_parse.parse_sparsity), a panel draws the fraction of zero
weights of each layer and of the whole net against the iteration, and -csv also writes
those as a .sparsity table. Needs matplotlib (the `plot` extra).
"""
import os
import re

from ..cli import Flag, command, parse_flags
from ..errors import CaffeError

FLAGS = [
    Flag("o", "curves.png", str, "Output image (png, pdf, svg: any matplotlib format)."),
    Flag("output", "", str, "Same as -o."),
    Flag("csv", "", str, "Optional; also write parse_log.py's .train/.test CSV files here "
                           "(and .sparsity, when the log has sparsity reports)."),
]

ROW_KEYS = ("NumIters", "Seconds", "LearningRate")
# Accuracy outputs live in [0, 1] while losses can be any size, so they get their own axis.
ACCURACY_NAME = re.compile(r"acc|top-?\d", re.I)


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CaffeError("plot needs matplotlib: pip install 'caffe-lite[plot]'") from None
    return Figure


def output_names(rows):
    """The net output columns of parse_log rows, in log order."""
    return [k for k in (rows[0] if rows else ()) if k not in ROW_KEYS]


def _axis_label(names, kind):
    return names[0] if len(names) == 1 else kind


def _plot_outputs(ax, rows, title, color_of):
    names = output_names(rows)
    accuracies = [n for n in names if ACCURACY_NAME.search(n)]
    losses = [n for n in names if n not in accuracies]
    right = ax.twinx() if accuracies and losses else None
    lines = []
    for name in names:
        target = right if (right is not None and name in accuracies) else ax
        pts = [(r["NumIters"], r[name]) for r in rows if name in r]
        lines += target.plot([p[0] for p in pts], [p[1] for p in pts], label=name,
                             color=color_of[name])
    ax.set_ylabel(_axis_label(losses, "loss") if losses else _axis_label(accuracies, "accuracy"))
    if right is not None:
        right.set_ylabel(_axis_label(accuracies, "accuracy"))
    ax.set_title(f"{title} net outputs")
    ax.legend(lines, [ln.get_label() for ln in lines], loc="best")
    ax.grid(True, alpha=0.3)


def _plot_sparsity(ax, rows):
    names = [k for k in rows[0] if k not in ("NumIters", "total")]
    iters = [r["NumIters"] for r in rows]
    for i, name in enumerate(names):
        ax.plot(iters, [r.get(name, float("nan")) for r in rows], label=name,
                color=f"C{i % 10}")
    ax.plot(iters, [r["total"] for r in rows], label="total", color="k", linewidth=2)
    ax.set_ylabel("fraction of zero weights")
    ax.set_title("sparsity")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)


def build_figure(train_rows, test_rows, sparsity_rows=()):
    """A matplotlib Figure of parse_log's rows: a panel per net with rows, the sparsity
    (when there are parse_sparsity rows), then the lr."""
    Figure = _figure_class()
    panels = [(rows, title) for rows, title in ((train_rows, "train"), (test_rows, "test"))
              if output_names(rows)]
    # One colour per output name, so the train loss and the test loss read as the same curve.
    names = list(dict.fromkeys(n for rows, _ in panels for n in output_names(rows)))
    color_of = {name: f"C{i % 10}" for i, name in enumerate(names)}
    rows = train_rows or test_rows
    heights = [3] * len(panels) + [3] * bool(sparsity_rows) + [2] * bool(rows)
    fig = Figure(figsize=(8, 2.8 * (len(panels) + bool(sparsity_rows)) + 2.4 * bool(rows)),
                 layout="constrained")
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False,
                        height_ratios=heights)[:, 0]
    for ax, (panel_rows, title) in zip(axes, panels):
        _plot_outputs(ax, panel_rows, title, color_of)
    if sparsity_rows:
        _plot_sparsity(axes[len(panels)], sparsity_rows)
    if not rows:
        axes[-1].set_xlabel("iteration")
        return fig
    lr = axes[-1]
    # A row's LearningRate is the "lr =" line of the display before it (parse_log.py's lag),
    # the rate in force since that iteration: drawn as a step there, a change lands where
    # the solver made it instead of one display late.
    lr.plot([r["NumIters"] for r in rows], [r["LearningRate"] for r in rows], color="C7",
            drawstyle="steps-pre")
    lr.set_title("learning rate")
    lr.set_ylabel("learning rate")
    lr.set_xlabel("iteration")
    lr.grid(True, alpha=0.3)
    return fig


def _no_rows_error(log_path):
    from ..log_parse import GLOG_STAMP
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if not any("net output #" in line for line in lines):
        return CaffeError("no 'Train net output' or 'Test net output' lines found (is this a "
                          "training log with display > 0?)", log_path)
    # parse_log.py times every row from the glog stamp, so a log stripped of it has no rows.
    if not any("Solving" in line and GLOG_STAMP.search(line) for line in lines):
        return CaffeError("no 'Solving' line with a glog stamp (I1203 06:55:17.167365 ...), "
                          "which the rows are timed from; was the stamp cut off?", log_path)
    return CaffeError("the 'net output' lines have no glog stamp (I1203 06:55:17.167365 ...), "
                      "which the rows are timed from; was the stamp cut off?", log_path)


@command("plot", "plot training curves from a log")
def plot(argv):
    values, positional = parse_flags(argv, FLAGS)
    if len(positional) != 1:
        raise CaffeError("usage: caffe-lite plot LOG [-o curves.png] [-csv DIR]")
    log_path = positional[0]
    out = values["output"] or values["o"]
    if not os.path.isfile(log_path):
        raise CaffeError("no such log file", log_path)
    from ..log_parse import parse_log, parse_sparsity, save_csv_files
    train_rows, test_rows = parse_log(log_path)
    sparsity_rows = parse_sparsity(log_path)
    if not train_rows and not test_rows and not sparsity_rows:
        raise _no_rows_error(log_path)
    if values["csv"]:
        save_csv_files(log_path, values["csv"], train_rows, test_rows,
                       sparsity_rows=sparsity_rows)
    fig = build_figure(train_rows, test_rows, sparsity_rows)
    try:
        fig.savefig(out)
    except (OSError, ValueError) as err:
        raise CaffeError(f"cannot write plot: {err}", out) from None
    print(out)
    return 0
