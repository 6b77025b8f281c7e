"""benchmarks/bench_train.py's --json summary and benchmarks/plot_bench.py, which draws it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_train  # noqa: E402
import plot_bench  # noqa: E402


def fake_rows():
    # the workers' results as pooled() gives them: times in seconds, TEST keys as JSON gives
    ours = {"batch": 64, "times": [0.02, 0.03, 0.04], "rss": 200.0,
            "test": {"1": [0.001, 0.002], "64": [0.010]}}
    theirs = {"batch": 64, "times": [0.06, 0.06], "rss": 300.0,
              "test": {"1": [0.003], "64": [0.005]}}
    return [("lenet", ours, theirs), ("cifar10_quick", dict(ours), None)]


def test_summary_holds_the_medians_and_none_without_pytorch():
    nets = bench_train.summary(fake_rows())["nets"]
    assert nets[0]["train_s"] == pytest.approx(0.03)
    assert nets[0]["torch_train_s"] == pytest.approx(0.06)
    assert nets[0]["test"] == [{"batch": 1, "s": pytest.approx(0.0015), "torch_s": 0.003},
                               {"batch": 64, "s": 0.010, "torch_s": 0.005}]
    assert nets[1]["torch_train_s"] is None and nets[1]["torch_rss_mb"] is None


def test_ratios_are_pytorch_time_over_ours_and_skip_unmeasured_columns():
    lenet, cifar = bench_train.summary(fake_rows())["nets"]
    assert plot_bench.ratios(lenet) == [
        ("training step", pytest.approx(2.0)),
        ("TEST forward, batch 1", pytest.approx(2.0)),
        ("TEST forward, training batch", pytest.approx(0.5))]
    assert plot_bench.ratios(cifar) == []


def test_plot_command_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    summary = tmp_path / "bench.json"
    summary.write_text(json.dumps(bench_train.summary(fake_rows())))
    png = tmp_path / "bench.png"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/plot_bench.py"), str(summary),
                          "-o", str(png)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_command_refuses_a_bad_summary_in_one_line(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/plot_bench.py"), str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and str(bad) in run.stderr
