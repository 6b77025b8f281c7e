"""`caffe-lite optimize` (commands/optimize.py) on a tiny net, run as a user runs it.

conv1 (no bias) -> bn1 (BVLC) -> scale1 -> relu1 and conv2 -> bn2 (NVCaffe scale_bias, in
place) fold; bn3 after a Concat is left. The data is a constant image (DummyData), so
`caffe-lite test` on the input and on the output model sees the same batch; padding makes
the conv outputs differ across the image.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite import cli
from caffe_lite.common import TEST
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parent.parent

NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 }
                     data_filler { type: "constant" value: 0.7 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2"
  batch_norm_param { scale_bias: true } }
layer { name: "cat" type: "Concat" bottom: "bn1" bottom: "conv2" top: "cat" }
layer { name: "bn3" type: "BatchNorm" bottom: "cat" top: "bn3" }
layer { name: "ip" type: "InnerProduct" bottom: "bn3" top: "ip"
  inner_product_param { num_output: 3 } }
'''
FOLDS = ["Folded BatchNorm bn1 (+ Scale scale1) into Convolution conv1",
         "Folded BatchNorm bn2 into Convolution conv2",
         ("Left BatchNorm bn3 as it is: it follows Concat 'cat' (only a Convolution is "
          "folded, as in caffe-jacinto)")]


@pytest.fixture
def model(tmp_path):
    """The net and random weights and statistics (moving-average factor 2.5 for BVLC)."""
    (tmp_path / "tiny.prototxt").write_text(NET)
    net = Net(str(tmp_path / "tiny.prototxt"), phase=TEST)
    rng = np.random.default_rng(3)
    for name, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = rng.uniform(-1, 1, blob.shape)
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = rng.uniform(0.2, 3, blobs[1].shape)
            if len(blobs) == 3:                 # BVLC: [mean * f, var * f, f]
                blobs[2].data[...] = 2.5
                blobs[1].data[...] *= 2.5
    net.save(str(tmp_path / "tiny.caffemodel"))
    return tmp_path


def caffe_lite(*args):
    run = subprocess.run([sys.executable, "-m", "caffe_lite"] + [str(a) for a in args],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    return run.stderr


def scores(folder, prefix):
    """The `ip` values `caffe-lite test` prints for one batch."""
    log = caffe_lite("test", "-model", folder / f"{prefix}.prototxt",
                     "-weights", folder / f"{prefix}.caffemodel", "-iterations", 1)
    return np.array([float(v) for v in re.findall(r"Batch 0, ip = (\S+)", log)])


def test_optimize_as_a_user_runs_it(model):
    (model / "out").mkdir()
    log = caffe_lite("optimize", "-model", model / "tiny.prototxt",
                     "-weights", model / "tiny.caffemodel",
                     "-output", model / "out" / "tiny_folded.caffemodel")
    for line in FOLDS + ["The folded BatchNorm and Scale layers stay as identities"]:
        assert line in log
    assert sorted(p.name for p in (model / "out").iterdir()) == [
        "tiny_folded.caffemodel", "tiny_folded.prototxt"]

    text = text_format.Parse((model / "out" / "tiny_folded.prototxt").read_text(),
                             caffe_pb2.NetParameter())
    assert [lp.name for lp in text.layer] == [lp.name for lp in text_format.Parse(
        NET, caffe_pb2.NetParameter()).layer]
    assert not text.HasField("state") and not any(len(lp.blobs) for lp in text.layer)
    conv1 = text.layer[1].convolution_param
    assert conv1.bias_term and conv1.bias_filler.type == "constant" and \
        conv1.bias_filler.value == 0

    want, got = scores(model, "tiny"), scores(model / "out", "tiny_folded")
    assert want.size == got.size == 3
    # the 1e-5 relative, plus the rounding of %g's 6 significant digits (5e-6 |v|)
    bound = 1e-5 * np.abs(want).max() + 5e-6 * (np.abs(want) + np.abs(got))
    assert (np.abs(got - want) <= bound).all(), (got, want)


def test_remove_bn_and_output_model(model, capsys):
    rc = cli.main(["optimize", "-model", str(model / "tiny.prototxt"),
                   "-weights", str(model / "tiny.caffemodel"),
                   "-output_model", str(model / "slim"), "-remove_bn"])
    err = capsys.readouterr().err
    assert rc == 0, err
    for line in FOLDS + [("Removed BatchNorm bn1 and Scale scale1 (Convolution conv1 now "
                          "writes their top)"), "Removed BatchNorm bn2 (Convolution conv2"]:
        assert line in err
    text = text_format.Parse((model / "slim.prototxt").read_text(), caffe_pb2.NetParameter())
    assert [(lp.name, list(lp.bottom), list(lp.top)) for lp in text.layer] == [
        ("data", [], ["data"]), ("conv1", ["data"], ["bn1"]), ("relu1", ["bn1"], ["bn1"]),
        ("conv2", ["bn1"], ["conv2"]), ("cat", ["bn1", "conv2"], ["cat"]),
        ("bn3", ["cat"], ["bn3"]), ("ip", ["bn3"], ["ip"])]
    full = Net(str(model / "tiny.prototxt"), phase=TEST, weights=str(model / "tiny.caffemodel"))
    slim = Net(str(model / "slim.prototxt"), phase=TEST, weights=str(model / "slim.caffemodel"))
    want, got = full.forward()["ip"], slim.forward()["ip"]
    assert (np.abs(got - want) <= 1e-5 * np.abs(want).max()).all()


@pytest.mark.parametrize("args, message", [
    (["-weights", "w", "-output", "o"], "Need a model definition to optimize (-model)."),
    (["-model", "m", "-output", "o"], "Need model weights to optimize (-weights)."),
    (["-model", "m", "-weights", "w"], "Need an output path to optimize (-output)."),
    (["-model", "m", "-weights", "w", "-output", "a", "-output_model", "b"],
     "-output and -output_model name different files; give one"),
    (["-model", "m", "-weights", "w", "-output", "/no/such/dir/x"],
     "/no/such/dir: -output: no such directory"),
])
def test_bad_flags_are_one_line_errors(capsys, args, message):
    assert cli.main(["optimize"] + args) == 1
    assert capsys.readouterr().err.strip() == f"caffe-lite optimize: error: {message}"
