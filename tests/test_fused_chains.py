"""Net's fused chains (net_fusion.py): a BVLC BatchNorm computes the Scale layer that reads
its top, and the ReLU after it, in one pass; a Scale writes a ReLU's own top. Every blob's
data and diff, every parameter gradient and the loss keep the bits of the layer-by-layer
pass, in TRAIN and TEST, whole and partial, on images and on one value per channel."""
import numpy as np
import pytest
from google.protobuf import text_format

from net_bits import assert_same_bits
import caffe_lite as caffe
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

HEAD = """
name: "chains"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 5 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
"""
# miniVggNet's pattern, each layer writing its own blob, on images and after an InnerProduct
APART = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "scale1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "scale1" top: "relu1" }
layer { name: "fc" type: "InnerProduct" bottom: "relu1" top: "fc"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "fc" top: "bn2" }
layer { name: "scale2" type: "Scale" bottom: "bn2" top: "scale2"
        scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "scale2" top: "relu2"
        relu_param { negative_slope: 0.1 } }
layer { name: "ip" type: "InnerProduct" bottom: "relu2" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
"""
# a Scale without bias and a ReLU in place on its top; a BatchNorm with a Scale and no
# ReLU; a Scale that reads a split of the BatchNorm's top writes the ReLU's top itself, and
# so does one in place
MIXED = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "scale1" }
layer { name: "relu1" type: "ReLU" bottom: "scale1" top: "scale1" }
layer { name: "bn2" type: "BatchNorm" bottom: "scale1" top: "bn2" }
layer { name: "scale2" type: "Scale" bottom: "bn2" top: "scale2"
        scale_param { bias_term: true } }
layer { name: "bn3" type: "BatchNorm" bottom: "scale2" top: "bn3" }
layer { name: "scale3" type: "Scale" bottom: "bn3" top: "scale3"
        scale_param { bias_term: true } }
layer { name: "relu3" type: "ReLU" bottom: "scale3" top: "relu3" }
layer { name: "pool" type: "Pooling" bottom: "bn3" top: "pool"
        pooling_param { pool: AVE kernel_size: 6 } }
layer { name: "scale4" type: "Scale" bottom: "relu3" top: "relu3"
        scale_param { bias_term: true } }
layer { name: "relu4" type: "ReLU" bottom: "relu3" top: "relu4" }
layer { name: "ip" type: "InnerProduct" bottom: "relu4" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "silence" type: "Silence" bottom: "pool" }
"""
TAIL = """
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
FUSED = {
    "apart": {"bn1": "relu1", "bn2": "relu2"},
    # bn3's top is split (pool reads it too): scale3 leads, and writes relu3's top
    "mixed": {"bn1": "relu1", "bn2": "scale2", "scale3": "relu3", "scale4": "relu4"},
}


def _nets(body, phase):
    """The same net twice, fused and layer by layer, with the same weights and inputs."""
    param = text_format.Parse(HEAD + {"apart": APART, "mixed": MIXED}[body] + TAIL,
                              caffe_pb2.NetParameter())
    fused, plain = Net(param=param, phase=phase), Net(param=param, phase=phase)
    plain._fusions, plain._kept_tops = {}, []
    rng = np.random.default_rng(1)
    for name, blobs in fused.params.items():
        for k, (blob, twin) in enumerate(zip(blobs, plain.params[name])):
            blob.data[...] = rng.standard_normal(blob.data.shape)
            if name.startswith("bn"):       # stored statistics: factor, positive variance
                blob.data[...] = [np.abs(blob.data), np.abs(blob.data) + 0.5, 1.5][k]
            twin.data[...] = blob.data
    data = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    for net in (fused, plain):
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = [0, 1, 2, 1]
    return fused, plain


@pytest.mark.parametrize("body", list(FUSED))
def test_which_chains_are_fused(body):
    fused, _ = _nets(body, caffe.TRAIN)
    names = fused.layer_names
    assert {names[i]: names[f.last] for i, f in fused._fusions.items()
            if names[i] in FUSED[body]} == FUSED[body]


@pytest.mark.parametrize("body", list(FUSED))
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_a_fused_chain_has_the_same_bits(body, phase):
    fused, plain = _nets(body, phase)
    names = fused.layer_names

    def not_run(*args):
        raise AssertionError("a fused layer ran on its own")
    for i, fusion in fused._fusions.items():
        if names[i] in FUSED[body]:
            for rec in fusion.followers:
                rec.layer.forward = not_run
    for _ in range(2):                 # the second pass: running statistics updated once
        losses = [net.forward_backward() for net in (fused, plain)]
        assert losses[0] == losses[1]
        assert_same_bits(fused, plain)


def test_a_partial_pass_fuses_only_what_it_runs():
    """forward to scale1: bn1 cannot fuse relu1, which does not run; scale1 then runs
    alone. forward from scale1: scale1 leads and writes relu1's top."""
    fused, plain = _nets("apart", caffe.TEST)
    names = list(fused.layer_names)
    for net in (fused, plain):
        net.forward_from_to(0, names.index("scale1"))
        net.blobs["bn1"].data[...] -= 0.25              # a user's edit between passes
        net.forward_from_to(names.index("scale1"), len(names) - 1)
    assert_same_bits(fused, plain)
    assert (fused.blobs["scale1"].data < 0).any()       # relu1 kept apart from scale1
