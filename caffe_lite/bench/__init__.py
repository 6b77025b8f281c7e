"""Benchmarks that the `caffe-lite bench` command runs (commands/bench.py).

    sparse.py   SSL's sparse convolution modes against dense GEMM (`bench sparse`)
    prune.py    zeros in a pattern and the pattern of a weight's zeros (pure functions)
    inputs.py   a net with its data layers replaced by Input layers fed random data
    report.py   the stdout table, the CSV and the speed-up figure
"""
