"""caffe-jacinto quantization flows (compress/jacinto_quantize.py, jacinto_quantize_solver.py,
quant_selection.py, snapshot_log.py):
layer selection, the net-level hook (Q-B/Q-C) in TEST and TRAIN, the solver-level hook
(Q-A) with its start iteration, snapshot_log's files, state through snapshot and resume,
`caffe-lite test` on a quantized model, and the accuracy of a fitted net at TI's defaults."""
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite import common
from caffe_lite.compress import fixed_point as fp
from caffe_lite.compress import jacinto_quantize as jq
from caffe_lite.compress import jacinto_quantize_solver as jqs
from caffe_lite.compress import quant_selection as qsel
from caffe_lite.compress.snapshot_log import log_paths
from caffe_lite.errors import CaffeError
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver
from corpus import CORPUS

TEST, TRAIN = caffe_pb2.TEST, caffe_pb2.TRAIN
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- selection ---------------------------------------------------------------------------------
def test_qc_selection_merges_conv_bn_relu_and_skips_ignored_layers():
    # data(Data) -> conv1 -> bn1 (in place) -> relu1 (in place) -> pool1 -> conv2 -> ip -> loss
    g = qsel.Graph(["Data", "Convolution", "BatchNorm", "ReLU", "Pooling", "Convolution",
                  "InnerProduct", "SoftmaxWithLoss"],
                 ["data", "conv1", "bn1", "relu1", "pool1", "conv2", "ip", "loss"],
                 [[], [0], [2], [2], [2], [3], [4], [5, 1]],
                 [[0, 1], [2], [2], [2], [3], [4], [5], [6]])
    rows = qsel.qc_selection(g, ignored_names=["ip"])
    assert rows == [(False, [0]),        # data: first top only, not the label
                    (True, []),          # conv1 is merged with bn1
                    (False, []),         # bn1 is merged with relu1
                    (False, [0]), (False, [0]),
                    (True, [0]),         # conv2 -> InnerProduct: not merged
                    (False, []),         # ignored: neither weights nor output
                    (False, [])]         # not a quantized type
    no_acts = qsel.qc_selection(g, quantize_activations=False)
    assert [tops for _, tops in no_acts] == [[]] * 8
    no_weights = qsel.qc_selection(g, quantize_weights=False)
    assert [w for w, _ in no_weights] == [False] * 8


def test_qc_selection_bn_and_scale_before_a_convolution():
    # data -> bn0 -> scale0 -> conv1 -> scale1 -> conv2
    g = qsel.Graph(["Input", "BatchNorm", "Scale", "Convolution", "Scale", "Convolution"],
                 ["in", "bn0", "scale0", "conv1", "scale1", "conv2"],
                 [[], [0], [1], [2], [3], [4]], [[0], [1], [2], [3], [4], [5]])
    tops = [t for _, t in qsel.qc_selection(g)]
    # bn0 -> Scale: merged; scale0 -> Conv with no Conv before: merged; conv1 -> Scale:
    # merged; scale1 -> Conv but a Conv feeds it: not merged; conv2 is last: quantized
    assert tops == [[], [], [], [], [0], [0]]


def test_adjacency_selection_follows_list_order():
    types = ["Data", "Convolution", "BatchNorm", "ReLU", "Pooling", "Convolution",
             "Eltwise", "ReLU", "InnerProduct", "Deconvolution"]
    assert qsel.adjacency_selection(types) == [
        (False, False, False),
        (True, True, False),     # Conv followed by BatchNorm
        (True, False, False),    # BatchNorm followed by ReLU
        (True, False, True), (True, False, True),
        (True, True, True),      # Conv followed by Eltwise
        (False, False, False),   # Eltwise followed by ReLU gets no param at all
        (True, False, True),
        (True, True, True),
        (True, True, True)]      # Deconvolution: always; last layer


# --- the net-level hook ------------------------------------------------------------------------
TINY = '''name: "tiny" {quant}
layer {{ name: "in" type: "Input" top: "data"
  input_param {{ shape {{ dim: 2 dim: 2 dim: 4 dim: 4 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 3 kernel_size: 3
    weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "relu1" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "relu1" top: "ip"
  inner_product_param {{ num_output: 3
    weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.3 }} }} }}
'''


def tiny_net(quant, phase=TEST, seed=1):
    common.set_random_seed(seed)
    param = caffe_pb2.NetParameter()
    text_format.Parse(TINY.format(quant=quant), param)
    net = Net(param=param, phase=phase)
    net.blobs["data"].data[...] = np.random.default_rng(4).standard_normal((2, 2, 4, 4))
    return net


def hook_of(net):
    (hook,) = [h for h in net.forward_hooks if isinstance(h, jq.NetQuantizer)]
    return hook


def test_net_quantizer_q_c_pass_by_pass():
    plain = tiny_net("")
    net = tiny_net("quantize: true")
    assert not plain.forward_hooks and hook_of(net).vintage == "0.17"
    w0 = [b.data.copy() for b in net.params["conv1"]]
    plain.forward()
    conv0, relu0, ip0 = (plain.blobs[n].data.copy() for n in ("conv1", "relu1", "ip"))

    net.forward()                                # pass 0: float, ranges recorded
    for name, want in (("conv1", conv0), ("relu1", relu0), ("ip", ip0)):
        assert np.array_equal(net.blobs[name].data, want)

    net.forward()                                # pass 1 = quantization_start
    # relu1's range: the first sample, expanded by 1.25; unsigned, 255 levels
    relu_scale = fp.estimate_qscale(0.0, fp.qc_range_update(0, relu0.max(), True, 0.01, 1.25),
                                    8, False, False)
    assert np.array_equal(net.blobs["relu1"].data, fp.fake_quantize(relu0, relu_scale))
    codes = net.blobs["relu1"].data * np.float32(relu_scale.scale)
    assert np.abs(codes - np.round(codes)).max() <= 255 * 4 * np.finfo(np.float32).eps
    # conv1 is merged with relu1: its output stays float, computed with the float weights
    assert np.array_equal(net.blobs["conv1"].data, conv0)
    # ... whose weights are then rounded in place: 12-bit with offset, bias 16-bit unclamped
    w_scale = fp.estimate_qscale(w0[0].min(), w0[0].max(), 12, False, True)
    b_scale = fp.estimate_qscale(w0[1].min(), w0[1].max(), 16, False, True)
    w1 = [b.data.copy() for b in net.params["conv1"]]
    assert np.array_equal(w1[0], fp.fake_quantize(w0[0], w_scale))
    assert np.array_equal(w1[1], fp.fake_quantize(w0[1], b_scale, clip=False))
    assert not np.array_equal(w1[0], w0[0])

    net.forward()                                # pass 2: the weights are not rounded again
    assert all(np.array_equal(b.data, w) for b, w in zip(net.params["conv1"], w1))
    qp = net.layer_dict["conv1"].param.quantization_param
    assert qp.qparam_w[0].quantize and qp.qparam_w[0].bitwidth == 12
    assert qp.qparam_w[1].bitwidth == 16 and not qp.qparam_out[0].quantize
    assert net.layer_dict["relu1"].param.quantization_param.qparam_out[0].quantize
    saved = net.to_proto()
    assert saved.layer[1].quantization_param.qparam_w[0].scale_target == \
        qp.qparam_w[0].scale_target


def test_ignored_layer_names_keep_float_outputs():
    plain = tiny_net("")
    net = tiny_net('quantize: true net_quantization_param { ignored_layer_names: "relu1" '
                   'quantize_weights: false }')
    for _ in range(2):
        plain.forward()
        net.forward()
    assert np.array_equal(net.blobs["relu1"].data, plain.blobs["relu1"].data)
    assert np.array_equal(net.params["conv1"][0].data, plain.params["conv1"][0].data)
    assert not np.array_equal(net.blobs["ip"].data, plain.blobs["ip"].data)


def test_quantization_start_zero_turns_it_off():
    assert not tiny_net("quantize: true net_quantization_param { quantization_start: 0 }"
                        ).forward_hooks


def test_train_phase_rounds_stochastically():
    plain = tiny_net("", phase=TRAIN)
    net = tiny_net("quantize: true net_quantization_param { quantize_weights: false }",
                   phase=TRAIN)
    plain.forward()
    net.forward()
    net.forward()
    relu0 = plain.blobs["relu1"].data
    qs = fp.estimate_qscale(0.0, fp.qc_range_update(0, relu0.max(), True, 0.01, 1.25), 8,
                            False, False)
    nearest = fp.fake_quantize(relu0, qs)
    got = net.blobs["relu1"].data
    scale = np.float32(qs.scale)
    inv = np.float32(1) / scale
    down = np.floor(relu0 * scale)               # the two codes around each value
    up = np.minimum(down + 1, 255)
    assert np.all((got == down * inv) | (got == up * inv))
    assert not np.array_equal(got, nearest)      # 96 draws: some round the other way


def test_q_b_vintage_warm_up_range_and_weight_blob_0_only():
    plain = tiny_net("")
    net = tiny_net("quantize: true net_quantization_param { power2_range: true }")
    hook = hook_of(net)
    assert hook.vintage == "0.16"
    b0 = net.params["conv1"][1].data.copy()
    plain.forward()
    net.forward()
    relu_max = plain.blobs["relu1"].data.max()
    # Q-B warm-up: the sample expanded by 2 replaces the old range
    assert net.layer_names[2] == "relu1"
    assert hook.out_range[hook.out_index[(2, 0)]][1] == np.float32(2 * relu_max)
    net.forward()
    assert np.array_equal(net.params["conv1"][1].data, b0)   # 0.16 rounds blob 0 only
    qs = fp.estimate_qscale(0.0, 2 * relu_max, 8, True, False)
    relu_qp = net.layer_dict["relu1"].param.quantization_param
    assert relu_qp.qparam_out[0].scale == qs.scale == 2.0 ** qs.fracbits
    # TI's "avoid a left shift" writes fracbits_out <= fracbits_in + fracbits_w (0 here)
    assert relu_qp.qparam_out[0].fracbits == min(qs.fracbits, relu_qp.qparam_in[0].fracbits)
    codes = net.blobs["relu1"].data * np.float32(qs.scale)
    assert np.array_equal(codes, np.round(codes))           # a power-of-two grid


def test_factories_reject_unimplemented_precision():
    param = caffe_pb2.NetParameter()
    text_format.Parse(TINY.format(quant="quantize: true net_quantization_param "
                                        "{ precision: MINIFLOAT }"), param)
    with pytest.raises(CaffeError, match="MINIFLOAT"):
        Net(param=param, phase=TEST)
    sp = caffe_pb2.SolverParameter(insert_quantization_param=True)
    sp.quantization_param.precision = caffe_pb2.QuantizationParameter.INTEGER_POWER_OF_2_WEIGHTS
    with pytest.raises(CaffeError, match="INTEGER_POWER_OF_2_WEIGHTS"):
        jqs.make_solver_quantizer(sp)
    assert jqs.make_solver_quantizer(caffe_pb2.SolverParameter()) is None


@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs ../shared/corpus")
def test_corpus_jacintonet11_deploy_selection():
    path = CORPUS / "jacinto-models/caffe-0.17/trained/image_classification/" \
                    "cifar10_jacintonet11v2/test_quantize/deploy.prototxt"
    net = Net(str(path), TEST)
    hook = hook_of(net)
    quantized_out = {net.layers[i].type for i, tops in enumerate(hook.quant_tops) if tops}
    assert quantized_out == {"Bias", "ReLU", "Pooling", "InnerProduct"}
    assert sum(bool(t) for t in hook.quant_tops) == 1 + 10 + 5 + 1
    assert sum(bool(w) for w in hook.quant_weights) == 10 + 1
    net.blobs["data"].data[...] = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32))
    net.forward()
    net.forward()
    assert hook.infer_count == 2 and np.isfinite(net.blobs["prob"].data).all()


# --- accuracy at TI's defaults ------------------------------------------------------------------
FITTED = '''name: "fitted" {quant}
layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: 500 dim: 16 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: 64 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 4 }} }}
'''


def test_default_quantization_keeps_a_fitted_net_within_one_point():
    # a 2-layer net "trained" in closed form: random ReLU features, then least squares onto
    # one-hot labels, on 4 overlapping Gaussian classes
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, 16)) * 0.9

    def sample(n):
        y = rng.integers(0, 4, n)
        return (means[y] + rng.standard_normal((n, 16))).astype(np.float32), y

    x_fit, y_fit = sample(4000)
    w1 = (rng.standard_normal((64, 16)) * 0.5).astype(np.float32)
    b1 = (rng.standard_normal(64) * 0.5).astype(np.float32)
    hidden = np.maximum(x_fit @ w1.T + b1, 0)
    design = np.hstack([hidden, np.ones((len(hidden), 1), np.float32)])
    coef = np.linalg.lstsq(design, np.eye(4)[y_fit], rcond=None)[0].astype(np.float32)
    x_test, y_test = sample(2000)

    def accuracy(quant):
        param = caffe_pb2.NetParameter()
        text_format.Parse(FITTED.format(quant=quant), param)
        net = Net(param=param, phase=TEST)
        net.params["ip1"][0].data[...], net.params["ip1"][1].data[...] = w1, b1
        net.params["ip2"][0].data[...], net.params["ip2"][1].data[...] = coef[:-1].T, coef[-1]
        net.blobs["data"].data[...] = x_test[:500]
        net.forward()                            # pass 0: ranges (TI's quantization_start 1)
        correct = 0
        for k in range(0, 2000, 500):
            net.blobs["data"].data[...] = x_test[k:k + 500]
            net.forward()
            correct += int((net.blobs["ip2"].data.argmax(1) == y_test[k:k + 500]).sum())
        return correct / 2000

    plain = accuracy("")
    quantized = accuracy("quantize: true")
    assert 0.6 < plain < 0.98                    # a task with errors to make
    assert abs(quantized - plain) <= 0.01


# --- the solver-level hook (Q-A) ------------------------------------------------------------
QA_NET = '''name: "qa"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  snapshot_log_weights: true snapshot_log_out: true
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def qa_solver(tmp_path, extra="", net=QA_NET, insert=True):
    (tmp_path / "net.prototxt").write_text(net)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" lr_policy: "fixed" display: 0 '
                    f'snapshot_after_train: false random_seed: 3 test_iter: 1 '
                    f'test_interval: 1 test_initialization: true '
                    f'snapshot_prefix: "{tmp_path / "snap"}" '
                    f'insert_quantization_param: {str(insert).lower()} '
                    f'quantization_start_iter: 2 '
                    f'quantization_param {{ bw_weights: 3 bw_layer_out: 4 }} {extra}')
    return get_solver(str(path))


def test_solver_quantization_starts_at_the_given_iteration(tmp_path):
    # lr 0 and constant data: the weights, the ranges' samples and the float scores are fixed
    net = QA_NET.replace('type: "gaussian" std: 1 }', 'type: "constant" value: 0.5 }', 1)
    solver = qa_solver(tmp_path, "base_lr: 0 max_iter: 3", net=net)
    scores = []
    for _ in range(3):
        solver.step(1)
        scores.append(solver.mean_scores[0][0])
    assert scores[0] == scores[1] != scores[2]          # tested at iterations 0, 1, 2
    conv = solver.net.layer_dict["conv1"]
    w = conv.blobs[0].data
    hi = 0.0
    for _ in range(2):                                   # two updates before iteration 2
        hi = fp.qa_range_update(hi, w.max())
    fl = 3 - (fp.abs_bits(hi) + 1)
    qp = conv.param.quantization_param
    assert (qp.bw_weights, qp.fl_weights, qp.quantize_layer_weights) == (3, fl, True)
    assert not qp.quantize_layer_out                     # merged with the ReLU after it
    assert solver.net.layer_dict["relu1"].param.quantization_param.quantize_layer_out
    # the test net rounds to nearest; the train net stochastically, to a neighbouring code
    test_conv = solver.test_nets[0].layer_dict["conv1"]
    assert np.array_equal(test_conv.effective_weight(),
                          fp.fake_quantize(w, fp.qa_scale(3, fl, False)))
    codes = conv.effective_weight() * 2.0 ** fl
    clamped = np.clip(w * 2.0 ** fl, -4, 3)
    assert np.array_equal(codes, np.round(codes)) and codes.min() >= -4 and codes.max() <= 3
    assert np.all(np.abs(codes - clamped) < 1)
    assert np.array_equal(w, conv.blobs[0].data)         # the float weights stay float


def test_solver_without_insert_quantization_param_does_not_quantize(tmp_path):
    solver = qa_solver(tmp_path, "base_lr: 0 max_iter: 3", insert=False)
    solver.step(3)
    assert solver.net.layer_dict["conv1"].param_transform is None
    assert not solver.net.layer_dict["conv1"].param.HasField("quantization_param")


def test_snapshot_log_files(tmp_path):
    solver = qa_solver(tmp_path, "base_lr: 0.01 max_iter: 4 snapshot: 4 snapshot_log: true")
    solver.solve()
    model = tmp_path / "snap_iter_4.caffemodel"
    text_path, binary_path = log_paths(model)
    assert (text_path, binary_path) == (str(tmp_path / "snap_iter_4.prototxt"),
                                        str(tmp_path / "snap_iter_4.binaryproto"))
    log = caffe_pb2.NetLogParameter()
    log.ParseFromString(open(binary_path, "rb").read())
    from_text = text_format.Parse(open(text_path).read(), caffe_pb2.NetLogParameter())
    assert from_text == log
    assert [lp.name for lp in log.layer] == solver.net.layer_names
    assert all(not len(lp.blobs) for lp in log.layer)
    ip = [lp for lp in log.layer if lp.name == "ip"][0].quantization_param
    assert ip.bw_weights == 3 and ip.quantize_layer_weights and ip.quantize_layer_out
    names = [b.name for b in log.blob_log]
    assert names == ["ip weight:0", "ip weight:1", "layer:ip, top:0"]
    weight = log.blob_log[0]
    assert (weight.is_quantized, weight.bw, weight.fl) == (True, 3, ip.fl_weights)
    w = solver.net.params["ip"][0].data
    codes = np.asarray(weight.blob_data.data).reshape(w.shape)
    assert np.array_equal(codes, fp.integer_codes(w, fp.qa_scale(3, ip.fl_weights, False)))
    assert codes.min() >= -4 and codes.max() <= 3
    out = log.blob_log[2]
    assert (out.bw, out.fl) == (4, ip.fl_layer_out)


@pytest.mark.parametrize("resume_at", [1, 3])      # before and after quantization starts
def test_quantization_state_survives_snapshot_and_resume(tmp_path, resume_at):
    extra = "base_lr: 0.05 max_iter: 5 snapshot: 1"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = qa_solver(tmp_path / "a", extra)
    straight.solve()
    resumed = qa_solver(tmp_path / "b", extra)
    resumed.solve(str(tmp_path / "a" / f"snap_iter_{resume_at}.solverstate"))
    a, b = (s.hooks[[type(h) for h in s.hooks].index(jqs.SolverQuantizer)]
            for s in (straight, resumed))
    assert a.get_state() == b.get_state() and a.widths
    for name in ("conv1", "ip"):
        for x, y in zip(straight.net.params[name], resumed.net.params[name]):
            assert np.array_equal(x.data, y.data)


# --- `caffe-lite test` on a quantized model -----------------------------------------------------
PLAIN = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 }
    data_filler { type: "constant" value: 0.7 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def run_test_command(tmp_path, model):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "caffe_lite", "test", "-model", str(model),
                          "-weights", str(tmp_path / "w.caffemodel"), "-iterations", "2"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    batches = [ln.split("loss = ")[1] for ln in lines if "] Batch " in ln]
    final = [ln.split("] ")[1] for ln in lines if "] Loss: " in ln]
    return batches, final, out.stderr


def test_caffe_lite_test_reports_the_quantized_loss(tmp_path):
    (tmp_path / "plain.prototxt").write_text(PLAIN)
    (tmp_path / "quantized.prototxt").write_text(
        "quantize: true\nnet_quantization_param { bitwidth_weights: 2 "
        "bitwidth_activations: 2 bitwidth_bias: 2 }\n" + PLAIN)
    common.set_random_seed(5)
    Net(str(tmp_path / "plain.prototxt"), TEST).save(str(tmp_path / "w.caffemodel"))
    plain_batches, plain_loss, _ = run_test_command(tmp_path, tmp_path / "plain.prototxt")
    q_batches, q_loss, log = run_test_command(tmp_path, tmp_path / "quantized.prototxt")
    assert len(plain_batches) == len(q_batches) == 2
    assert q_batches[0] == plain_batches[0]          # pass 0 collects the ranges
    assert q_batches[1] != plain_batches[1]          # pass 1 runs with 2-bit numbers
    assert q_loss != plain_loss
    assert "Enabling quantization at output of: ReLU relu1" in log


def test_caffe_lite_time_runs_the_quantized_passes(tmp_path):
    (tmp_path / "quantized.prototxt").write_text("quantize: true\n" + PLAIN)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "caffe_lite", "time", "-model",
                          str(tmp_path / "quantized.prototxt"), "-iterations", "2"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # the second pass is quantization_start: the timed passes are the quantized ones
    assert "Enabling quantization at output of: ReLU relu1" in out.stderr
    assert "Average Forward pass" in out.stderr
