"""Net's kept tops: a BatchNorm whose top nothing else writes reads that top in its backward
instead of keeping x_norm, a copy of it (BVLC's TODO in BatchNormLayer::Forward_cpu). Every
blob's data and diff and every parameter gradient keep their bits; any layer that may write
the top's memory, directly or through a blob sharing it, keeps the copy."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.net import Net
from caffe_lite.net_hooks import NetHook
from caffe_lite.proto import caffe_pb2

HEAD = """
name: "kept"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 5 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1"
        batch_norm_param { use_global_stats: false } }
"""
TAIL = """
layer {{ name: "ip" type: "InnerProduct" bottom: "{last}" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

SCALE_RELU = """
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "scale1"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "scale1" top: "relu1" }
"""
CASES = {
    # (layers after bn1, the blob the InnerProduct reads, whether bn1 is kept)
    "scale and relu out of place": (SCALE_RELU, "relu1", True),
    "read twice through a split": (SCALE_RELU + """
layer { name: "pool" type: "Pooling" bottom: "bn1" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
""", "relu1", True),
    "relu in place on its top": ("""
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
""", "bn1", False),
    "in place on a flattened view": ("""
layer { name: "flat" type: "Flatten" bottom: "bn1" top: "flat" }
layer { name: "power" type: "Power" bottom: "flat" top: "flat" power_param { shift: 1 } }
""", "flat", False),
    "in place on a reshaped view of a split": ("""
layer { name: "pool" type: "Pooling" bottom: "bn1" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "shape" type: "Reshape" bottom: "bn1" top: "shaped"
        reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "power" type: "Power" bottom: "shaped" top: "shaped"
        power_param { scale: 2 } }
""", "shaped", False),
}


def _net(case):
    body, last, _ = CASES[case]
    text = HEAD + body + TAIL.format(last=last)
    net = Net(param=text_format.Parse(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    rng = np.random.default_rng(3)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    return net


def _pass(net):
    net.clear_param_diffs()
    net.forward_prefilled()
    net.backward_all()
    blobs = {name: (b.data.copy(), b.diff.copy()) for name, b in net.blobs.items()}
    params = {name: [p.diff.copy() for p in ps] for name, ps in net.params.items()}
    return blobs, params


@pytest.mark.parametrize("case", list(CASES))
def test_which_tops_are_kept(case):
    net = _net(case)
    assert ([layer.param.name for layer in net._kept_tops] == ["bn1"]) == CASES[case][2]


@pytest.mark.parametrize("case", list(CASES))
def test_a_kept_top_gives_the_bits_of_the_copy(case):
    kept, copied = _net(case), _net(case)
    copied._kept_tops, copied._fusions = [], {}
    bn = kept.layer_dict["bn1"]
    got, want = _pass(kept), _pass(copied)
    assert (bn._x_norm is None) == CASES[case][2]
    assert copied.layer_dict["bn1"]._x_norm is not None
    for name, (data, diff) in want[0].items():
        np.testing.assert_array_equal(got[0][name][0], data, err_msg=name)
        np.testing.assert_array_equal(got[0][name][1], diff, err_msg=name)
    for name, diffs in want[1].items():
        for a, b in zip(got[1][name], diffs):
            np.testing.assert_array_equal(a, b, err_msg=name)


class _Rewrite(NetHook):
    """A forward hook that rewrites every top after its layer, as a quantizing hook does."""

    def after_layer(self, net, i):
        for top in net.top_vecs[i]:
            top.data[...] = np.round(top.data * 8) / 8


def test_forward_hooks_keep_the_copy():
    net, plain = _net("scale and relu out of place"), _net("scale and relu out of place")
    plain._kept_tops, plain._fusions = [], {}
    for n in (net, plain):
        n.add_forward_hook(_Rewrite())
    got, want = _pass(net), _pass(plain)
    assert net.layer_dict["bn1"]._x_norm is not None
    np.testing.assert_array_equal(got[0]["conv1"][1], want[0]["conv1"][1])
