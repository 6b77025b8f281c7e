"""`caffe-lite bench sparse` (issue #11): run as a user runs it on a tiny net (Input, two
Convolutions, one with group 2, an InnerProduct); the CSV's rows and numbers, each pruning
pattern's zeros checked on the pruned matrix, the -weights path, data layers turned into
Input layers, and one-line errors for bad flags."""
import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite import cli
from caffe_lite.bench.inputs import bench_net, fill_inputs
from caffe_lite.bench.prune import BLOCK, PATTERNS, prune, structure
from caffe_lite.bench.sparse import CONV_ONLY, CSV_COLUMNS, MODES, NO_TOTAL, TOTAL
from caffe_lite.common import TEST
from caffe_lite.net import Net

ROOT = Path(__file__).resolve().parents[1]
NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 group: 2
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
        inner_product_param { num_output: 3 } }
"""
#: reduction length K of each measured layer: C/g * kh * kw, or the InnerProduct's inputs
REDUCTION = {"conv1": 4 * 9, "conv2": 4 * 9, "ip": 4 * 4 * 4}
LAYERS = ("conv1", "conv2", "ip")
SPARSITIES = (0.0, 0.9)
EPS32 = float(np.finfo(np.float32).eps)


def err_bound(k):
    """Rounding bound of a float32 sum of k products relative to the largest output: each
    output is within (k + 2) eps (|W| |x|) of the exact sum (tests/sparsity.py), and
    (|W| |x|) <= k max|w| max|x| <= k max|y| for these nets (N(0, 1/K) weights, N(0, 1)
    inputs: the largest output is larger than the largest weight times input)."""
    return (k + 2) * EPS32 * k


def bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "caffe_lite", "bench", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), [dict(zip(CSV_COLUMNS, row)) for row in reader]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.prototxt"
    path.write_text(NET)
    return path


@pytest.fixture(scope="module")
def pruned_run(model):
    """One run of the command, with -o when matplotlib is installed."""
    out = model.parent
    args = ["sparse", "-model", str(model), "-sparsity", "0,0.9", "-batch", "2", "-reps", "1",
            "-warmup", "1", "-csv", str(out / "out.csv")]
    try:
        import matplotlib  # noqa: F401
        args += ["-o", str(out / "plot.png")]
    except ImportError:
        pass
    run = bench(*args)
    assert run.returncode == 0, run.stderr
    return run, out


def test_csv_has_every_row_and_consistent_numbers(pruned_run):
    run, out = pruned_run
    header, rows = read_csv(out / "out.csv")
    assert header == ["layer", "mode", "pattern", "sparsity", "batch", "ms", "dense_ms",
                      "speedup", "max_rel_err"]
    keys = [(r["layer"], r["mode"], float(r["sparsity"])) for r in rows]
    expected = {(layer, mode, s) for s in SPARSITIES for layer in LAYERS for mode in MODES
                if layer != "ip" or mode not in CONV_ONLY}
    expected |= {(TOTAL, mode, s) for s in SPARSITIES for mode in MODES if mode not in NO_TOTAL}
    assert len(keys) == len(set(keys)) and set(keys) == expected
    for r in rows:
        assert r["pattern"] == "random" and r["batch"] == "2"
        ms, dense_ms = float(r["ms"]), float(r["dense_ms"])
        assert ms > 0 and dense_ms > 0
        assert float(r["speedup"]) == pytest.approx(dense_ms / ms, rel=1e-4)
        bound = (sum(err_bound(k) for k in REDUCTION.values()) if r["layer"] == TOTAL
                 else err_bound(REDUCTION[r["layer"]]))
        assert 0 <= float(r["max_rel_err"]) < bound, r
        if r["mode"] == "LOWERED_GEMM":
            assert ms == dense_ms and float(r["max_rel_err"]) == 0
    # the dense baseline of a layer is one measurement, shared by every mode's row
    for layer in LAYERS + (TOTAL,):
        for s in SPARSITIES:
            dense = {r["dense_ms"] for r in rows if r["layer"] == layer
                     and float(r["sparsity"]) == s}
            assert len(dense) == 1


def test_stdout_table(pruned_run):
    run, _ = pruned_run
    lines = run.stdout.splitlines()
    assert lines[0].startswith("bench sparse: ") and "batch 2" in lines[0]
    threads = int(lines[0].split(" threads;")[0].split()[-1])
    assert threads >= 1
    assert "sparsity 0.9, pattern random" in lines
    conv2 = [ln.split() for ln in lines if ln.startswith("conv2 ")]
    assert len(conv2) == 2 * len(MODES) and conv2[0][1] == "4x36/g2"


def test_plot_is_written(pruned_run):
    pytest.importorskip("matplotlib")
    _, out = pruned_run
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_im2col_gemm_is_caffes_lowering_everywhere(monkeypatch):
    """IM2COL_GEMM lowers and multiplies even where the dense engine runs tiles, and gives
    the dense engine's sums to float32 rounding."""
    from caffe_lite.bench.sparse import make_engine
    from caffe_lite.kernels import blocked_conv, conv
    from caffe_lite.kernels.conv import ConvGeometry
    rng = np.random.default_rng(4)
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 1)
    x = rng.standard_normal((16, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    dense, ref = np.empty((16, 16, 6, 6), np.float32), np.empty((16, 16, 6, 6), np.float32)
    make_engine("LOWERED_GEMM").forward(x, w, b, geo, dense)
    lowered = []
    real = conv.conv2d_forward

    def no_tiles(*args, **kwargs):
        raise AssertionError("IM2COL_GEMM ran the tiles")

    def counted(*args, **kwargs):
        lowered.append(args[2:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(blocked_conv, "blocked_conv_forward", no_tiles)
    monkeypatch.setattr("caffe_lite.bench.sparse.conv2d_forward", counted)
    make_engine("IM2COL_GEMM").forward(x, w, b, geo, ref)
    assert len(lowered) == 1
    scale = np.abs(w).reshape(16, -1).sum(axis=1).max() * np.abs(x).max() + np.abs(b).max()
    assert np.max(np.abs(ref - dense)) <= (72 + 2) * EPS32 * scale


# --- the pruning patterns, on the pruned matrix ---------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("group, shape", [(1, (6, 10)), (2, (8, 18)), (4, (8, 7))])
def test_prune_zeroes_exactly_the_asked_units(pattern, sparsity, group, shape):
    rng = np.random.default_rng(7)
    mat = rng.uniform(0.5, 1.0, shape).astype(np.float32)      # no zero of its own
    out = prune(mat, sparsity, pattern, np.random.default_rng(3), group)
    assert out.shape == mat.shape and np.array_equal(out[out != 0], mat[out != 0])
    st = structure(out, group)
    m, k = shape
    per = m // group
    if pattern == "random":
        assert st.elements == round(sparsity * m * k) / (m * k)
    elif pattern == "rows":
        assert st.rows == round(sparsity * m) / m
        assert st.elements == st.rows and (st.in_rows == 1 or st.elements == 0)
    elif pattern == "columns":
        for g in range(group):
            band = out[g * per:(g + 1) * per]
            assert np.count_nonzero((band == 0).all(axis=0)) == round(sparsity * k)
        assert st.elements == st.columns == round(sparsity * k) / k
        assert st.in_columns == 1 or st.elements == 0
    else:
        bh, bw = min(BLOCK[0], per), min(BLOCK[1], k)
        tiles = math.ceil(per / bh) * math.ceil(k / bw)
        zero = out == 0
        for g in range(group):
            band = zero[g * per:(g + 1) * per]
            full = [band[i:i + bh, j:j + bw].all() for i in range(0, per, bh)
                    for j in range(0, k, bw)]
            some = [band[i:i + bh, j:j + bw].any() for i in range(0, per, bh)
                    for j in range(0, k, bw)]
            assert sum(full) == round(sparsity * tiles) and full == some   # whole tiles
        assert st.blocks == round(sparsity * tiles) / tiles


def test_structure_by_hand():
    """4 x 6 in two groups of 2 rows: row 0 zero; column 2 zero in group 0 only; one more
    zero at (3, 5). Zeros: 6 + 1 (row 1, col 2) + 1 = 8."""
    mat = np.ones((4, 6), np.float32)
    mat[0] = 0
    mat[1, 2] = 0
    mat[3, 5] = 0
    st = structure(mat, group=2, block=(2, 3))
    assert st.elements == 8 / 24 and st.rows == 1 / 4
    assert st.columns == 1 / 12                 # column 2 of group 0's band
    assert st.blocks == 0                       # 2x3 tiles: none all zero
    assert st.in_rows == 6 / 8 and st.in_columns == 2 / 8


# --- the model's own weights ----------------------------------------------------------------

def test_weights_path_reports_the_models_own_zeros(model, tmp_path, capsys):
    net = Net(str(model), phase=TEST)
    rng = np.random.default_rng(0)
    w1 = rng.uniform(0.5, 1, (8, 4, 3, 3)).astype(np.float32)
    w1[:2] = 0                                   # 2 of 8 filters: 0.25, all in zero rows
    w2 = rng.uniform(0.5, 1, (4, 4, 3, 3)).astype(np.float32)
    w2.reshape(4, 36)[:, :9] = 0                 # 9 of 36 columns in both groups: 0.25
    wip = rng.uniform(0.5, 1, (3, 64)).astype(np.float32)
    wip[0, :16] = 0                              # 16 / 192 elements
    for name, w in (("conv1", w1), ("conv2", w2), ("ip", wip)):
        net.params[name][0].data[...] = w
    weights = tmp_path / "tiny.caffemodel"
    net.save(weights)
    rc = cli.main(["bench", "sparse", "-model", str(model), "-weights", str(weights),
                   "-batch", "2", "-reps", "1", "-warmup", "1", "-modes",
                   "LOWERED_CCNMM,SCIPY_CSR", "-csv", str(tmp_path / "own.csv")])
    out = capsys.readouterr().out
    assert rc == 0
    _, rows = read_csv(tmp_path / "own.csv")
    own = {"conv1": 0.25, "conv2": 0.25, "ip": 16 / 192}
    total = (72 + 36 + 16) / (288 + 144 + 192)
    assert {(r["layer"], r["mode"]) for r in rows} == {
        (layer, mode) for layer in LAYERS for mode in ("LOWERED_CCNMM", "SCIPY_CSR")} | {
        (TOTAL, "LOWERED_CCNMM")}
    for r in rows:
        assert r["pattern"] == "model"
        assert float(r["sparsity"]) == pytest.approx(own.get(r["layer"], total), rel=1e-5)
    structure_rows = {ln.split()[0]: ln.split() for ln in out.splitlines()
                      if ln.split() and ln.split()[0] in LAYERS and len(ln.split()) == 7}
    # layer, weight, zeros, zero rows, zero columns, zeros in zero rows, in zero columns
    assert structure_rows["conv1"][2:] == ["0.250", "0.250", "0.000", "1.000", "0.000"]
    assert structure_rows["conv2"][2:] == ["0.250", "0.000", "0.250", "0.000", "1.000"]


# --- inputs without the data ----------------------------------------------------------------

TRAIN_VAL = """name: "tv"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "no/such_train_lmdb" backend: LMDB batch_size: 8 } }
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { crop_size: 5 mean_value: 1 mean_value: 2 mean_value: 3 }
        data_param { source: "no/such_test_lmdb" backend: LMDB batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 7 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_data_layers_become_inputs(tmp_path):
    path = tmp_path / "tv.prototxt"
    path.write_text(TRAIN_VAL)
    net, labels = bench_net(str(path), batch=3)
    assert labels == ["label"] and net.blobs["data"].shape == (3, 3, 5, 5)
    fill_inputs(net, labels, np.random.default_rng(0))
    label = net.blobs["label"].data
    assert label.shape == (3,) and set(label) <= set(range(7))
    assert np.isfinite(net.forward()["loss"]).all()
    own, _ = bench_net(str(path))
    assert own.blobs["data"].shape == (4, 3, 5, 5)
    tiny = tmp_path / "tiny.prototxt"
    tiny.write_text(NET)
    assert bench_net(str(tiny), batch=5)[0].blobs["data"].shape == (5, 4, 6, 6)


def test_data_layer_without_source_or_crop_is_one_line(tmp_path, capsys):
    path = tmp_path / "tv.prototxt"
    path.write_text(TRAIN_VAL.replace("crop_size: 5", ""))
    rc = cli.main(["bench", "sparse", "-model", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if "error" in ln]
    assert rc == 1 and len(errors) == 1
    assert "layer 'd' (Data)" in errors[0] and "deploy net" in errors[0]


# --- bad flags ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["sparse", "-modes", "LOWERED_GEMM,FAST"], "-modes: unknown mode 'FAST'"),
    (["sparse", "-sparsity", "0,1"], "-sparsity: 1 is outside [0, 1)"),
    (["sparse", "-sparsity", "-0.1"], "-sparsity: -0.1 is outside [0, 1)"),
    (["sparse", "-sparsity", "0,x"], "-sparsity: 'x' is not a number"),
    (["sparse", "-pattern", "diagonal"], "-pattern: unknown pattern 'diagonal'"),
    (["sparse", "-reps", "0"], "-reps must be >= 1"),
    (["sparse", "-weights", "w.caffemodel", "-pattern", "rows"], "give one or the other"),
    (["dense"], "unknown benchmark 'dense' (benchmarks: sparse)"),
    ([], "which benchmark?"),
])
def test_bad_flags_are_one_line(model, capsys, args, message):
    argv = ["bench"] + args[:1] + (["-model", str(model)] if args else []) + args[1:]
    rc = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 1 and captured.out == "" and len(lines) == 1
    assert lines[0].startswith("caffe-lite bench: error: ") and message in lines[0]
