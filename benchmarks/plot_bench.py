"""Plot caffe-lite against PyTorch per net from bench_train.py's --json summary.

    python benchmarks/bench_train.py --json bench_train.json
    python benchmarks/plot_bench.py bench_train.json -o docs/img/bench_train.png

One group of bars per net: the speed ratio (PyTorch time / caffe-lite time) of the training
step, of the TEST forward at batch 1 and at the training batch. A bar above the line at 1.0 is
a net where caffe-lite is faster. Needs matplotlib (the `[plot]` extra).
"""
import argparse
import json
import sys


def ratios(net):
    """(label, PyTorch time / caffe-lite time) of each measured column of one net."""
    out = []
    if net["torch_train_s"]:
        out.append(("training step", net["torch_train_s"] / net["train_s"]))
    for t in net["test"]:
        if t["torch_s"]:
            label = "TEST forward, batch 1" if t["batch"] == 1 else "TEST forward, training batch"
            out.append((label, t["torch_s"] / t["s"]))
    return out


def plot(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = [n for n in summary["nets"] if ratios(n)]
    if not nets:
        raise SystemExit("plot_bench: the summary has no PyTorch times (was torch installed?)")
    labels = [lab for lab, _ in ratios(nets[0])]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.6 * len(nets) + 2, 4))
    for k, label in enumerate(labels):
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(nets))]
        ys = [dict(ratios(n)).get(label, 0.0) for n in nets]
        bars = ax.bar(xs, ys, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(nets)))
    ax.set_xticklabels([f"{n['net']}\n(batch {n['batch']})" for n in nets], fontsize=8)
    ax.set_ylabel("PyTorch time / caffe-lite time")
    ax.set_title(f"caffe-lite against PyTorch CPU, {summary['cpus']} CPUs, {summary['date']}"
                 "\nabove 1.0: caffe-lite is faster", fontsize=9)
    top = max(r for n in nets for _, r in ratios(n))
    ax.set_ylim(0, max(1.0, top) * 1.25)
    ax.legend(fontsize=8, ncol=len(labels), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", help="the JSON that bench_train.py --json wrote")
    ap.add_argument("-o", "--output", default="bench_train.png", help="PNG to write")
    args = ap.parse_args()
    try:
        with open(args.summary) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_bench: cannot read {args.summary}: {e}")
    plot(summary, args.output)


if __name__ == "__main__":
    main()
