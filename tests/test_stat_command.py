"""`caffe-lite stat`: per-layer MACs, parameters and SSL's four sparsities, checked against
counts worked out by hand on a tiny net whose weights have known zero rows, columns and
blocks, and run as a user runs it (a subprocess)."""
import subprocess
import sys

import numpy as np
import pytest

from caffe_lite.commands.stat import net_stats
from caffe_lite.common import TEST
from caffe_lite.compress.structure_stat import layer_stat
from caffe_lite.io.binary import write_binary
from caffe_lite.net import Net

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { block_group_lasso { xdimen: 2 ydimen: 2 } }
        convolution_param { num_output: 4 kernel_size: 3 group: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 } }
"""


def sparse_weights(net):
    """conv: 4 filters x (2 channels x 3 x 3) per group of 2; filter 1 all zero, column 0 of
    group 0 zero, and in group 1 columns 4..17 zero. ip: 3 x 64 with row 2 and column 5
    zero."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (4, 2, 3, 3)).astype(np.float32)
    m = w.reshape(4, 18)
    m[1] = 0
    m[0:2, 0] = 0
    m[2:4, 4:] = 0
    net.params["conv"][0].data[...] = w
    ip = rng.uniform(0.5, 1.0, (3, 64)).astype(np.float32)
    ip[2] = 0
    ip[:, 5] = 0
    net.params["ip"][0].data[...] = ip


def test_layer_stat_counts_by_hand():
    w = np.ones((4, 2, 3, 3), np.float32)
    m = w.reshape(4, 18)
    m[1] = 0
    m[0:2, 0] = 0
    m[2:4, 4:] = 0
    s = layer_stat(w, pixels=16, group=2, block=(2, 2))
    assert s.macs == 4 * 18 * 16
    # group 0: 1 live row (filter 0) x 17 live columns; group 1: 2 rows x 4 columns
    assert s.macs_lean == (1 * 17 + 2 * 4) * 16
    nnz = 17 + 0 + 4 + 4
    assert s.params_nnz == nnz and s.macs_nnz == nnz * 16 and s.params == 72
    assert s.element == pytest.approx(100 * (72 - nnz) / 72, rel=1e-6)
    assert s.row == pytest.approx(25.0)          # filter 1 of 4
    assert s.column == 0.0                       # no column is zero across all 4 rows
    # 2x2 blocks of the 4x18 matrix: 2 x 9 blocks; zero: row block 1, columns 2..8 (7)
    assert s.block == pytest.approx(100 * 7 / 18, rel=1e-6)


def write_model(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET)
    net = Net(str(model), phase=TEST)
    sparse_weights(net)
    weights = tmp_path / "tiny.caffemodel"
    write_binary(str(weights), net.to_proto())
    return model, weights, net


def test_net_stats_takes_pixels_and_groups_from_the_net(tmp_path):
    _, _, net = write_model(tmp_path)
    stats = dict(net_stats(net))
    conv, ip = stats["conv"], stats["ip"]
    assert conv.shape == (4, 2, 3, 3) and conv.macs == 4 * 18 * 16   # 4x4 outputs
    assert conv.macs_lean == (1 * 17 + 2 * 4) * 16
    assert conv.block is not None and ip.block is None
    assert ip.macs == 3 * 64 and ip.macs_lean == 2 * 63 and ip.params_nnz == 2 * 63
    assert ip.row == pytest.approx(100 / 3) and ip.column == pytest.approx(100 / 64)


def test_stat_command_prints_the_table(tmp_path):
    model, weights, _ = write_model(tmp_path)
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "stat", "-model", str(model),
                          "-weights", str(weights)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "shape", "MACs"]
    conv = next(line for line in lines if line.startswith("conv "))
    assert conv.split()[1:5] == ["4x2x3x3", "1,152", "400", "400"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:3] == ["1,344", "526"]
    assert lines[-3] == ("MACs per image: dense 1,344; with the all-zero rows and columns "
                         "removed 526 (2.56x fewer); non-zero weights only 526")
    assert lines[-2] == "Parameters kept: 151 of 264 weights (57.20%, 1.7x fewer)"
    # 264 weights and 7 biases in float32; sparse: 151 non-zeros and one filler entry for a
    # gap over 15, each a 4-bit index and a float32 value, then the biases
    assert lines[-1].startswith(f"Stored: {(152 * 36 + 7) // 8 + 28:,} bytes sparse")
    assert lines[-1].endswith("against 1,084 bytes float32 (1.5x smaller)")
    assert conv.split()[7] == "34.72" and conv.split()[-1] == "no"


@pytest.mark.parametrize("args, message", [
    ([], "Need a model definition to stat (-model)."),
    (["-model", "no/such.prototxt"], "no/such.prototxt"),
])
def test_stat_refuses_bad_input_in_one_line(args, message):
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "stat", *args],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and message in errors[0], run.stderr


def test_fused_layers_count_as_their_convolution(tmp_path):
    """SSL intel's ConvolutionReLUPool runs its convolution at the unpooled size."""
    model = tmp_path / "fused.prototxt"
    model.write_text("""name: "f"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c" type: "ConvolutionReLUPool" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.1 } }
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProductReLUDropout" bottom: "c" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
""")
    stats = dict(net_stats(Net(str(model), phase=TEST)))
    assert stats["c"].macs == 4 * 27 * 64           # 8x8 outputs before the pooling
    assert stats["ip"].macs == 5 * 64               # 4 channels x 4x4 after it
