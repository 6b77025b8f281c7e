"""A forward-only Net (a solver's test net, `caffe-lite test`, forward_only=True) keeps
nothing for a backward: BatchNorm writes no x_norm, an in-place Scale no copy of its input.
Its forward gives the bits of the plain net's, running statistics included, and a backward
on it is refused in one line rather than run on missing state."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

from net_bits import assert_same_bits

HEAD = """
name: "forward_only"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 3 dim: 4 dim: 5 dim: 5 } shape { dim: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
"""
NV_IN_PLACE = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { scale_bias: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
"""
NV_APART = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1"
        batch_norm_param { scale_bias: true } }
"""
BVLC_IN_PLACE = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: false } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
"""
IP_THEN_NV = """
layer { name: "ip0" type: "InnerProduct" bottom: "bn1" top: "ip0"
        inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "ip0" top: "ip0"
        batch_norm_param { scale_bias: true } }
"""
TAIL = """
layer {{ name: "ip" type: "InnerProduct" bottom: "{last}" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""
CASES = {       # (layers after conv1, the blob they leave)
    "NVCaffe BatchNorm and ReLU in place": (NV_IN_PLACE, "conv1"),
    "NVCaffe BatchNorm apart": (NV_APART, "bn1"),
    "BVLC BatchNorm, Scale and ReLU in place": (BVLC_IN_PLACE, "conv1"),
    "NVCaffe BatchNorm after an InnerProduct": (NV_APART + IP_THEN_NV, "ip0"),
}


def _net(case, phase, forward_only=False):
    body, last = CASES[case]
    text = HEAD + body + TAIL.format(last=last)
    net = Net(param=text_format.Parse(text, caffe_pb2.NetParameter()), phase=phase,
              forward_only=forward_only)
    rng = np.random.default_rng(5)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape)
            if blob.data.size == 1:
                blob.data[...] = 2.0        # a moving-average factor / variance correction
    for layer in net.layers:                # stored variances must be positive
        if layer.type == "BatchNorm":
            for name, blob in zip(layer.names, layer.blobs):
                if name == "variance":
                    blob.data[...] = np.abs(blob.data) + 0.5
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = [0, 1, 2]
    return net


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
@pytest.mark.parametrize("case", list(CASES))
def test_a_forward_only_pass_keeps_the_bits_and_no_backward_state(case, phase):
    plain, only = _net(case, phase), _net(case, phase, forward_only=True)
    for _ in range(2):                      # twice: the running statistics move in TRAIN
        plain.forward_prefilled()
        only.forward_prefilled()
    assert_same_bits(only, plain)
    for layer in only.layers:
        assert layer._x_norm is None if layer.type == "BatchNorm" else True
        assert getattr(layer, "_keep", None) is None if layer.type == "Scale" else True


@pytest.mark.parametrize("case", list(CASES))
def test_a_backward_is_refused_then_allowed_again(case):
    only, plain = _net(case, caffe_pb2.TRAIN, forward_only=True), _net(case, caffe_pb2.TRAIN)
    only.forward_prefilled()
    plain.forward_prefilled()               # the same running statistics
    with pytest.raises(CaffeError, match="forward only"):
        only.backward_all()
    only.forward_only = False               # the next forward keeps its state again
    for net in (only, plain):
        net.clear_param_diffs()
        net.forward_prefilled()
    for net in (only, plain):
        net.backward_all()
    assert_same_bits(only, plain)


def test_a_layer_backward_after_a_forward_only_pass_is_one_clear_error():
    net = _net("NVCaffe BatchNorm apart", caffe_pb2.TRAIN, forward_only=True)
    net.forward_prefilled()
    i = list(net.layer_names).index("bn1")
    with pytest.raises(CaffeError, match="kept no x_norm"):
        net.layers[i].backward(net.top_vecs[i], [True], net.bottom_vecs[i])
