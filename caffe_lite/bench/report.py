"""What `caffe-lite bench sparse` writes: the stdout table, the CSV and the speed-up figure.

The figure has a panel for TOTAL (the whole net's forward) and one per measured layer, in
a grid of at most three columns: speed-up over dense against sparsity, one line per mode
(SciPy's CSR dashed, as the reference), and LOWERED_GEMM as the dotted line y = 1, as in
the figure of SSL's README. Needs matplotlib (the `plot` extra).
"""
import csv
import math

from ..errors import CaffeError
from .sparse import CSV_COLUMNS, DENSE, MODES, REFERENCES, TOTAL

TABLE_COLUMNS = ("layer", "weight", "mode", "zeros", "ms", "dense ms", "speed-up",
                 "max rel err")
STRUCTURE_COLUMNS = ("layer", "weight", "zeros", "zero rows", "zero columns",
                     "zeros in zero rows", "zeros in zero columns")


def _aligned(header, lines, left):
    """Text of `lines` (tuples of strings) under `header`, the first `left` columns
    left-aligned and the others right-aligned."""
    lines = [header] + lines
    widths = [max(len(r[k]) for r in lines) for k in range(len(header))]
    text = ["  ".join(c.ljust(w) if k < left else c.rjust(w)
                      for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return text


def format_table(rows, title_of):
    """The rows grouped by sparsity point, each group under `title_of(point rows)`."""
    text = []
    for point in sorted({r.point for r in rows}):
        group = [r for r in rows if r.point == point]
        lines = [(r.layer, r.shape, r.mode, f"{r.zeros:.3f}", f"{r.ms:.3f}",
                  f"{r.dense_ms:.3f}", f"{r.speedup:.2f}x", f"{r.max_rel_err:.1e}")
                 for r in group]
        text += ["", title_of(group)] + _aligned(TABLE_COLUMNS, lines, 3)
    return "\n".join(text[1:])


def format_structure(structures):
    """Where the model's own zeros lie, per layer (fractions)."""
    lines = [(name, shape, f"{s.elements:.3f}", f"{s.rows:.3f}", f"{s.columns:.3f}",
              f"{s.in_rows:.3f}", f"{s.in_columns:.3f}") for name, shape, s in structures]
    return "\n".join(_aligned(STRUCTURE_COLUMNS, lines, 2))


def write_csv(rows, path):
    try:
        with open(path, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(CSV_COLUMNS)
            for r in rows:
                out.writerow((r.layer, r.mode, r.pattern, f"{r.sparsity:.6g}", r.batch,
                              f"{r.ms:.6g}", f"{r.dense_ms:.6g}", f"{r.speedup:.6g}",
                              f"{r.max_rel_err:.6g}"))
    except OSError as err:
        raise CaffeError(f"cannot write the CSV: {err.strerror or err}", path) from None


def figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CaffeError("bench -o needs matplotlib: pip install 'caffe-lite[plot]'") from None
    return Figure


def build_figure(rows, title=""):
    """A matplotlib Figure: speed-up against sparsity, a panel per TOTAL and layer."""
    Figure = figure_class()
    names = list(dict.fromkeys([TOTAL] + [r.layer for r in rows if r.layer != TOTAL]))
    names = [n for n in names if any(r.layer == n for r in rows)]
    cols = min(3, len(names))
    grid = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.3 * grid), layout="constrained")
    axes = fig.subplots(grid, cols, squeeze=False).reshape(-1)
    color = {mode: f"C{i}" for i, mode in enumerate(MODES)}
    for ax, name in zip(axes, names):
        panel = [r for r in rows if r.layer == name]
        ax.axhline(1.0, color="k", linestyle=":", linewidth=1, label=f"{DENSE} (dense)")
        for mode in dict.fromkeys(r.mode for r in panel):
            if mode == DENSE:
                continue
            pts = sorted((r.sparsity, r.speedup) for r in panel if r.mode == mode)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                    linestyle="--" if mode in REFERENCES else "-",
                    color=color.get(mode, "C9"), label=mode)
        shape = panel[0].shape
        ax.set_title(f"{name} ({shape})" if shape else f"{name}: whole-net forward")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("speed-up over dense")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    # one legend for all panels: TOTAL has no SCIPY_CSR line, an InnerProduct no DIRECT_*
    handles = {}
    for ax in axes[:len(names)]:
        for line in ax.get_lines():
            handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 4), fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def save_figure(fig, path):
    try:
        fig.savefig(path)
    except (OSError, ValueError) as err:
        raise CaffeError(f"cannot write the plot: {err}", path) from None
