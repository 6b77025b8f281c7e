"""`caffe-lite plot LOG -o curves.png`: training curves from a caffe-lite (or Caffe) log.

The log is read with the regexes of Caffe's tools/extra/parse_log.py (caffe_lite.log_parse);
the figure has one panel for the train outputs and one for the test outputs against the
iteration, plus the learning rate. Needs matplotlib (the `plot` extra).
"""
import os

from ..cli import Flag, command, parse_flags
from ..errors import CaffeError

FLAGS = [
    Flag("o", "curves.png", str, "Output image (png, pdf, svg: any matplotlib format)."),
    Flag("output", "", str, "Same as -o."),
    Flag("csv", "", str, "Optional; also write parse_log.py's .train/.test CSV files here."),
]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CaffeError("plot needs matplotlib: pip install 'caffe-lite[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@command("plot", "plot training curves from a log")
def plot(argv):
    values, positional = parse_flags(argv, FLAGS, "plot")
    if len(positional) != 1:
        raise CaffeError("plot: usage: caffe-lite plot LOG [-o curves.png]")
    log_path = positional[0]
    out = values["output"] or values["o"]
    if not os.path.isfile(log_path):
        raise CaffeError("no such log file", log_path)
    from ..log_parse import parse_log, save_csv_files
    train_rows, test_rows = parse_log(log_path)
    if not train_rows and not test_rows:
        raise CaffeError("no 'Train net output' or 'Test net output' lines found (is this a "
                         "training log with display > 0?)", log_path)
    if values["csv"]:
        save_csv_files(log_path, values["csv"], train_rows, test_rows)
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    for ax, rows, title in ((axes[0], train_rows, "train"), (axes[1], test_rows, "test")):
        names = [k for k in (rows[0].keys() if rows else [])
                 if k not in ("NumIters", "Seconds", "LearningRate")]
        for name in names:
            pts = [(r["NumIters"], r[name]) for r in rows if name in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_title(f"{title} net outputs")
        if names:
            ax.legend()
        ax.grid(True, alpha=0.3)
    rows = train_rows or test_rows
    axes[2].plot([r["NumIters"] for r in rows], [r["LearningRate"] for r in rows])
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("iteration")
    axes[2].grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(out)
    except (OSError, ValueError) as err:
        raise CaffeError(f"cannot write plot: {err}", out) from None
    plt.close(fig)
    print(out)
    return 0
