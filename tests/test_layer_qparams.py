"""A prototxt's own per-layer quantization_param (compress/layer_qparams.py): the formats a
file gives its layers are applied, in both schemas, in `caffe-lite test`, and stand aside
where caffe-lite chooses the formats itself."""
import os
import subprocess
import sys

import numpy as np
from google.protobuf import text_format

from caffe_lite.common import TEST
from caffe_lite.compress import jacinto_quantize as jq
from caffe_lite.compress.layer_qparams import PrototxtFormats
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = '''name: "q"
{net_fields}
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: 3 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param {{ num_output: 2 }}
  {qparam} }}
'''
# Q-A (caffe-0.15): weights and bias in 8-bit Q3.4, the output in 8-bit Q5.2
QA = ("quantization_param { quantize_layer_weights: true bw_weights: 8 fl_weights: 4 "
      "quantize_layer_out: true bw_layer_out: 8 fl_layer_out: 2 }")
# Q-C (caffe-0.17): the same formats as scales; the bias 16 bits wide
QC = ("quantization_param { qparam_w { quantize: true bitwidth: 8 scale_target: 16 } "
      "qparam_w { quantize: true bitwidth: 16 scale_target: 16 } "
      "qparam_out { quantize: true bitwidth: 8 scale_target: 4 } }")

X = np.array([[1.0, -2.0, 0.5]], np.float32)
W = np.array([[0.3, -0.1, 2.0], [10.0, 0.04, -0.5]], np.float32)
B = np.array([0.2, 9.0], np.float32)
# By hand: W * 16 = [[4.8, -1.6, 32], [160, 0.64, -8]] rounds to [[5, -2, 32], [127 (clamped),
# 1, -8]], B * 16 = [3.2, 144] to [3, 144] (a bias is not clamped), so
# y = [5/16 + 4/16 + 1 + 3/16, 127/16 - 2/16 - 0.25 + 9] = [1.75, 16.5625], and 4 * y =
# [7, 66.25] rounds to [7, 66]: y = [1.75, 16.5] (float: [1.7, 18.67]).
EXPECTED = np.array([[1.75, 16.5]], np.float32)


def forward(qparam, net_fields=""):
    param = caffe_pb2.NetParameter()
    text_format.Parse(NET.format(qparam=qparam, net_fields=net_fields), param)
    net = Net(param=param, phase=TEST)
    net.params["ip"][0].data[...] = W
    net.params["ip"][1].data[...] = B
    net.blobs["x"].data[...] = X
    net.forward()
    return net, net.blobs["y"].data.copy()


def test_q_a_formats_of_the_file_round_weights_bias_and_output():
    net, y = forward(QA)
    np.testing.assert_array_equal(y, EXPECTED)
    assert np.array_equal(net.params["ip"][0].data, W)      # the stored weights stay float


def test_q_c_formats_of_the_file_give_the_same_numbers():
    for fields in ("", "quantize: true net_quantization_param { "
                       "update_quantization_param: false }"):
        net, y = forward(QC, fields)
        np.testing.assert_array_equal(y, EXPECTED)
        assert [type(h) for h in net.forward_hooks] == [PrototxtFormats]


def test_a_net_that_chooses_its_own_formats_ignores_the_file_s():
    net, y = forward(QC, "quantize: true")          # update_quantization_param: true
    assert [type(h) for h in net.forward_hooks] == [jq.NetQuantizer]
    # pass 0 measures ranges in float (quantization_start 1)
    np.testing.assert_allclose(y, X @ W.T + B, rtol=1e-6)


def test_formats_off_leave_the_layer_float():
    _, y = forward("quantization_param { precision: FLOAT }")
    np.testing.assert_allclose(y, X @ W.T + B, rtol=1e-6)


def test_caffe_lite_test_scores_with_the_file_s_formats(tmp_path):
    # x = 0.5, w = 0.3 -> 0.3125, b = 0.2 -> 0.1875: y = 3 * 0.15625 + 0.1875 = 0.65625,
    # rounded to quarters 0.75 (float: 0.65)
    net = ('name: "q"\n'
           'layer { name: "x" type: "DummyData" top: "x" dummy_data_param { '
           'shape { dim: 1 dim: 3 } data_filler { type: "constant" value: 0.5 } } }\n'
           'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
           'inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.3 } '
           'bias_filler { type: "constant" value: 0.2 } }\n  ' + QA + ' }\n')
    (tmp_path / "net.prototxt").write_text(net)
    Net(str(tmp_path / "net.prototxt"), TEST).save(str(tmp_path / "w.caffemodel"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "test", "-model", "net.prototxt",
                          "-weights", "w.caffemodel", "-iterations", "1", "-strict"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    scores = [ln.split("] ", 1)[1] for ln in run.stderr.splitlines() if "] Batch 0, y" in ln]
    assert scores == ["Batch 0, y = 0.75", "Batch 0, y = 0.75"]


QA_SOLVER_NET = '''name: "qa"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } }
  %s }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
''' % QA


def test_solver_quantization_replaces_the_file_s_formats_when_it_starts(tmp_path):
    (tmp_path / "net.prototxt").write_text(QA_SOLVER_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.01 lr_policy: "fixed" '
                    'display: 0 max_iter: 3 snapshot_after_train: false random_seed: 3 '
                    'insert_quantization_param: true quantization_start_iter: 2 '
                    'quantization_param { bw_weights: 6 bw_layer_out: 6 }')
    solver = get_solver(str(path))
    ip = solver.net.layer_dict["ip"]
    file_hook = [h for h in solver.net.forward_hooks if isinstance(h, PrototxtFormats)][0]
    solver.step(1)
    assert ip.param_transform.owner is file_hook and file_hook.outputs
    codes = solver.net.blobs["ip"].data * 4                  # the file's Q5.2 output
    assert np.array_equal(codes, np.round(codes))
    solver.step(1)                                           # quantization starts
    assert not file_hook.outputs and ip.param_transform.owner is not file_hook
    assert ip.param.quantization_param.bw_weights == 6
