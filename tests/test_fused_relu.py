"""Net's ReLU fusion: a ReLU layer that runs in place on the top of a BatchNorm or Scale
layer is applied by that layer as it writes its top. Nothing a user can see may differ:
every blob's data and diff, every parameter's gradient and the loss have the same bits
as the layer-by-layer pass, in TRAIN and TEST, whole and partial."""
import numpy as np
import pytest
from google.protobuf import text_format

from net_bits import assert_same_bits
import caffe_lite as caffe
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

NET = """
name: "fused"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2"
        batch_norm_param { scale_bias: true bias_filler { type: "constant" value: -0.2 } } }
layer { name: "relu2" type: "ReLU" bottom: "bn2" top: "bn2" relu_param { negative_slope: 0.1 } }
layer { name: "conv3" type: "Convolution" bottom: "bn2" top: "conv3"
        convolution_param { num_output: 8 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }
layer { name: "scale3" type: "Scale" bottom: "bn3" top: "bn3"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 }
                      bias_filler { type: "constant" value: -0.3 } } }
layer { name: "relu3" type: "ReLU" bottom: "bn3" top: "bn3" }
layer { name: "scale4" type: "Scale" bottom: "bn3" top: "scale4"
        scale_param { filler { type: "constant" value: 0.5 } } }
layer { name: "relu4" type: "ReLU" bottom: "scale4" top: "scale4"
        relu_param { negative_slope: -0.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "scale4" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _nets(phase):
    """The same net twice, fused and layer by layer, with the same weights and inputs."""
    param = text_format.Parse(NET, caffe_pb2.NetParameter())
    fused, plain = Net(param=param, phase=phase), Net(param=param, phase=phase)
    plain._fusions = {}
    rng = np.random.default_rng(0)
    for name, blobs in fused.params.items():
        for blob, twin in zip(blobs, plain.params[name]):
            blob.data[...] = rng.standard_normal(blob.data.shape)
            if name.startswith("bn") and blob.data.size == 1:
                blob.data[...] = 1.5                     # moving-average factor
            elif name.startswith("bn") and blob is blobs[1]:
                blob.data[...] = np.abs(blob.data)       # variance
            twin.data[...] = blob.data
    data = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    for net in (fused, plain):
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = [0, 1, 2, 3]
    return fused, plain


def test_which_relus_are_fused():
    fused, _ = _nets(caffe.TRAIN)
    names = fused.layer_names
    pairs = {names[i]: names[f.last] for i, f in fused._fusions.items()}
    # relu4: a negative slope keeps its own in-place copy of the input
    assert pairs == {"bn1": "relu1", "bn2": "relu2", "scale3": "relu3"}


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_a_fused_pass_has_the_same_bits(phase):
    fused, plain = _nets(phase)

    def not_run(*args):
        raise AssertionError("a fused ReLU ran on its own")
    for name in ("relu1", "relu2", "relu3"):
        fused.layer_dict[name].forward = not_run
    for _ in range(2):                 # the second pass: running statistics updated once
        losses = [net.forward_backward() for net in (fused, plain)]
        assert losses[0] == losses[1]
        assert_same_bits(fused, plain)


def test_a_partial_pass_fuses_only_what_it_runs():
    """forward(start=relu1): the ReLU runs on its own on what is in the blob; forward
    to bn2: bn2 writes its top without relu2, which has not run."""
    fused, plain = _nets(caffe.TEST)
    names = list(fused.layer_names)
    for net in (fused, plain):
        net.forward_from_to(0, names.index("bn1"))
        net.blobs["conv1"].data[...] -= 0.25              # a user's edit between passes
        net.forward_from_to(names.index("relu1"), names.index("bn2"))
    assert_same_bits(fused, plain)
    assert (fused.blobs["bn2"].data < 0).any()              # relu2 not applied


def test_hooks_and_debug_info_see_each_layer():
    fused, _ = _nets(caffe.TEST)
    seen = []

    class Hook:
        def attach(self, net):
            pass

        def before_forward(self, net):
            pass

        def after_layer(self, net, i):
            seen.append(net.layer_names[i])
    fused.add_forward_hook(Hook())
    fused.forward_prefilled()
    assert "relu1" in seen and "relu2" in seen
