"""`caffe-lite threshold` (commands/threshold.py) on a tiny net with hand-made weights.

Four convolutions cover TI's eligibility rules: conv_a (2 -> 4) is too small, conv_b
(4 -> 32, 3x3) and conv_d (32 -> 8, 1x1) are thresholded, and conv_c is depthwise (group
32 = num_output), left alone by 0.16's rule and thresholded by 0.15's. The weights of the
thresholded layers are the magnitudes k / count, k = 1 ... count, shuffled and with mixed
signs, so a target fraction of 0.5 zeroes exactly the smaller half.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite import cli
from caffe_lite.commands.threshold import output_prefix
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parent.parent
F = np.float32

NET = '''name: "thr"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv_b" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "conv_c" type: "Convolution" bottom: "b" top: "c"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 32 } }
layer { name: "conv_d" type: "Convolution" bottom: "c" top: "d"
  convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip"
  inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
'''
# -threshold_value_maxratio 1 and -threshold_value_max 1 lift TI's caps (1e-3 * max and
# 1e-4), step 1e-4 * max is finer than the gaps 1 / count between the magnitudes
FLAGS = ["-threshold_fraction_low", "0.5", "-threshold_fraction_mid", "0.5",
         "-threshold_value_maxratio", "1", "-threshold_value_max", "1",
         "-threshold_step_factor", "1e-4"]


def ladder(shape, seed):
    """k / count for k = 1 ... count, shuffled, signs mixed."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    values = np.arange(1, count + 1) / count * rng.choice([-1, 1], count)
    return rng.permutation(values).astype(F).reshape(shape)


@pytest.fixture
def model(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    net = Net(str(tmp_path / "net.prototxt"), phase=caffe_pb2.TEST)
    for seed, (name, blobs) in enumerate(net.params.items()):
        blobs[0].data[...] = ladder(blobs[0].shape, seed)
        blobs[1].data[...] = 0.5
    net.save(str(tmp_path / "dense.caffemodel"))
    return tmp_path, {name: blobs[0].data.copy() for name, blobs in net.params.items()}


def zeros(w):
    return int(np.count_nonzero(w == 0))


def test_threshold_as_a_user_runs_it(model):
    folder, dense = model
    (folder / "out").mkdir()
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "threshold",
                          "-model", str(folder / "net.prototxt"),
                          "-weights", str(folder / "dense.caffemodel"),
                          "-output", str(folder / "out" / "sparse.caffemodel")] + FLAGS,
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    log = run.stderr
    assert "conv_a: ni=2 no=4: left alone (fewer than 32 input and output channels)" in log
    assert "conv_c: ni=32 no=32: left alone (group 32 >= num_output 32 (depthwise))" in log
    # conv_b: 1152 weights, max 1: the threshold is the last step below 577/1152
    line = next(s for s in log.splitlines() if "conv_b: ni=4 no=32 fraction=0.5" in s)
    selected = float(line.split("SelectedThreshold=")[1].split()[0])
    assert 577 / 1152 - 1e-4 * 1.01 <= selected < 577 / 1152
    assert "ZeroWeightsFraction=0.5" in line
    assert "Thresholded convolutions: sparsity = 0.5 (704/1408)" in log
    for expected in ("Sparsity #0: conv_a = 0 (0/72)", "Sparsity #1: conv_b = 0.5 (576/1152)",
                     "Sparsity #2: conv_c = 0 (0/288)", "Sparsity #3: conv_d = 0.5 (128/256)",
                     "Sparsity #4: ip = 0 (0/400)", "Total sparsity = 0.324723 (704/2168)"):
        assert "    " + expected in log

    text = caffe_pb2.NetParameter()
    text_format.Parse((folder / "out" / "sparse.prototxt").read_text(), text)
    assert [layer.name for layer in text.layer][:2] == ["data", "conv_a"]
    assert not any(len(layer.blobs) for layer in text.layer)

    net = Net(str(folder / "out" / "sparse.prototxt"), phase=caffe_pb2.TEST,
              weights=str(folder / "out" / "sparse.caffemodel"))
    got = {name: blobs[0].data for name, blobs in net.params.items()}
    for name in ("conv_a", "conv_c", "ip"):
        np.testing.assert_array_equal(got[name], dense[name])
    for name, count in (("conv_b", 1152), ("conv_d", 256)):
        # exactly the smaller half went, the larger half is untouched
        small = np.abs(dense[name]) <= count // 2 / count
        assert zeros(got[name]) == count // 2 and (got[name][small] == 0).all()
        np.testing.assert_array_equal(got[name][~small], dense[name][~small])
    net.forward()                                      # the thresholded model runs


def test_vintage_015_thresholds_depthwise_convs(model, capsys):
    folder, _ = model
    rc = cli.main(["threshold", "-model", str(folder / "net.prototxt"),
                   "-weights", str(folder / "dense.caffemodel"),
                   "-output", str(folder / "old"), "-vintage", "0.15"] + FLAGS)
    assert rc == 0, capsys.readouterr().err
    net = Net(str(folder / "net.prototxt"), phase=caffe_pb2.TEST,
              weights=str(folder / "old.caffemodel"))
    # conv_c: ni = 32, no = 32 -> mid fraction 0.5 of its 288 weights
    assert zeros(net.params["conv_c"][0].data) == 144
    assert zeros(net.params["conv_a"][0].data) == 0


@pytest.mark.parametrize("args, message", [
    (["-weights", "w"], "Need a model definition to threshold (-model)."),
    (["-model", "m", "-output", "o"], "Need model weights to threshold (-weights)."),
    (["-model", "m", "-weights", "w"], "Need an output path to threshold (-output)."),
    (["-model", "m", "-weights", "w", "-output", "/no/such/dir/x"],
     "/no/such/dir: -output: no such directory"),
    (["-model", "m", "-weights", "w", "-output", "o", "-vintage", "0.17"],
     "no caffe-jacinto layer-wise thresholding rules for version '0.17' (known: 0.15, 0.16)"),
])
def test_bad_flags_are_one_line_errors(capsys, args, message):
    assert cli.main(["threshold"] + args) == 1
    assert capsys.readouterr().err.strip() == f"caffe-lite threshold: error: {message}"


def test_output_prefix_is_dir_and_stem():
    assert output_prefix("out/model.caffemodel") == "out/model"
    assert output_prefix("model") == "./model"
    assert output_prefix("a/b.c.d") == "a/b.c"
