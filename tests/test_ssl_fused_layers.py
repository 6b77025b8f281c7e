"""The fused layer types of Wei Wen's SSL fork, branch intel (ConvolutionReLU,
ConvolutionReLUPool, ConvolutionReLUPoolLRN, InnerProductReLUDropout) against their unfused
sequences built as nets, plus gradient checks and the fork's own CaffeNet.

The oracle is `unfuse`, written here from the fork's layer definitions and independently of
layers/fused.py: each fused layer becomes its Convolution (or InnerProduct) under the same
name, with the same param specs and blobs, followed by ReLU in place, then Pooling, LRN or
Dropout (in place) with the fused layer's *_param messages, ending in the fused layer's tops.
The fused net's caffemodel loads into that net (same layer name, same blobs), and the two
must agree bit for bit: tops, bottom diffs and param diffs, in TRAIN and TEST, with the
dropout and stochastic-pooling draws taken from the same seed.
"""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.common import TEST, TRAIN, set_random_seed
from caffe_lite.compress.fork_fields import describe, unhonoured_fields
from caffe_lite.io.prototxt import read_net_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

import corpus
from gradcheck import check_gradient, check_gradient_exhaustive, make_layer
from test_corpus_nets import SMALL_SIZE, fill_inputs, with_inputs

INTEL_CAFFENET = corpus.CORPUS / "ssl-intel" / "models" / "bvlc_reference_caffenet" / \
    "train_val.prototxt"

# The fork's chains: (type, the *_param it reads), first to last.
CHAINS = {
    "ConvolutionReLU": (("Convolution", "convolution_param"), ("ReLU", "relu_param")),
    "ConvolutionReLUPool": (("Convolution", "convolution_param"), ("ReLU", "relu_param"),
                            ("Pooling", "pooling_param")),
    "ConvolutionReLUPoolLRN": (("Convolution", "convolution_param"), ("ReLU", "relu_param"),
                               ("Pooling", "pooling_param"), ("LRN", "lrn_param")),
    "InnerProductReLUDropout": (("InnerProduct", "inner_product_param"),
                                ("ReLU", "relu_param"), ("Dropout", "dropout_param")),
}
IN_PLACE = ("ReLU", "Dropout")


def unfuse(net_param):
    """`net_param` with each fused layer replaced by its unfused sequence."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for lp in net_param.layer:
        chain = CHAINS.get(lp.type)
        if chain is None:
            out.layer.add().CopyFrom(lp)
            continue
        # the blob each stage writes: in place where the fork's nets write it so
        current = list(lp.top) if all(k in IN_PLACE for k, _ in chain[1:]) else [
            f"{lp.name}/{chain[0][0].lower()}"]
        for index, (kind, field) in enumerate(chain):
            stage = out.layer.add()
            stage.name = lp.name if index == 0 else f"{lp.name}/{kind.lower()}"
            stage.type = kind
            stage.include.extend(lp.include)
            stage.exclude.extend(lp.exclude)
            if lp.HasField(field):
                getattr(stage, field).CopyFrom(getattr(lp, field))
            if index == 0:
                stage.bottom.extend(lp.bottom)
                stage.param.extend(lp.param)
                stage.blobs.extend(lp.blobs)
                stage.top.extend(current)
                continue
            if kind in IN_PLACE:
                if index == len(chain) - 1:
                    stage.loss_weight.extend(lp.loss_weight)
                if len(current) > 1:     # one ReLU per bottom/top pair, as a net writes it
                    out.layer.pop()
                    for k, name in enumerate(current):
                        pair = out.layer.add()
                        pair.CopyFrom(stage)
                        pair.name = f"{stage.name}{k}"
                        del pair.loss_weight[:]
                        pair.loss_weight.extend(lp.loss_weight[k:k + 1])
                        pair.bottom.append(name)
                        pair.top.append(name)
                else:
                    stage.bottom.extend(current)
                    stage.top.extend(current)
                continue
            last = index == len(chain) - 1
            stage.bottom.extend(current)
            current = list(lp.top) if last else [f"{lp.name}/{kind.lower()}"]
            stage.top.extend(current)
            if last:
                stage.loss_weight.extend(lp.loss_weight)
    return out


def net_text(layer, shapes, bottoms=("data",)):
    inputs = "".join(f'layer {{ name: "{b}" type: "Input" top: "{b}" input_param {{ shape {{ '
                     + " ".join(f"dim: {d}" for d in shape) + " } } }\n"
                     for b, shape in zip(bottoms, shapes))
    return f"force_backward: true\n{inputs}layer {{ {layer} }}\n"


def parse_net(text):
    param = caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return param


GAUSS = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'


def conv(extra):
    return f"convolution_param {{ num_output: 4 {extra} {GAUSS} }}"


def fused_layer(kind, params, bottoms=("data",), tops=("out",)):
    return (f'name: "f" type: "{kind}" '
            + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops) + " ".join(params))


def run_both(fused_param, phase, seed=7, tmp_path=None, backward=True):
    """Build the fused net and its unfused twin (weights through a caffemodel), run forward
    and backward on the same inputs and top diffs; returns (fused net, unfused net)."""
    set_random_seed(seed)
    fused = Net(param=fused_param, phase=phase)
    unfused = Net(param=unfuse(fused_param), phase=phase)
    if tmp_path is not None:
        fused.save(str(tmp_path / "fused.caffemodel"))
        unfused.copy_from(str(tmp_path / "fused.caffemodel"))
    else:
        unfused.copy_trained_layers_from(fused.to_proto())
    rng = np.random.default_rng(seed)
    inputs = {name: rng.standard_normal(fused.blobs[name].shape) for name in fused.inputs}
    nets = (fused, unfused)
    for net in nets:
        for name, value in inputs.items():
            net.blobs[name].data[...] = value
        set_random_seed(seed)
        net.forward()
    for name in fused.outputs:
        np.testing.assert_array_equal(fused.blobs[name].data, unfused.blobs[name].data,
                                      err_msg=f"top {name}")
    if not backward:
        return fused, unfused
    diffs = {name: rng.standard_normal(fused.blobs[name].shape) for name in fused.outputs}
    for net in nets:
        for name, value in diffs.items():
            net.blobs[name].diff[...] = value
        net.backward_all()
    for name in fused.inputs:
        np.testing.assert_array_equal(fused.blobs[name].diff, unfused.blobs[name].diff,
                                      err_msg=f"bottom diff {name}")
    assert [b.shape for b in fused.params["f"]] == [b.shape for b in unfused.params["f"]]
    for j, (a, b) in enumerate(zip(fused.params["f"], unfused.params["f"])):
        np.testing.assert_array_equal(a.data, b.data, err_msg=f"param {j}")
        np.testing.assert_array_equal(a.diff, b.diff, err_msg=f"param diff {j}")
    return fused, unfused


CONVS = {
    "k3s1p1": "kernel_size: 3 pad: 1",
    "k3s2g2": "kernel_size: 3 stride: 2 group: 2",
    "k2x3s1d2": "kernel_h: 2 kernel_w: 3 dilation: 2",
}
POOLS = {
    "max3s2": "pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
    "max2s2p1": "pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }",
    "ave3s2p1": "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
    "sto2s2": "pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }",
}
LRNS = {
    "across3": "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }",
    "within3": "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }",
}
# STOCHASTIC pooling has no TEST backward: Pooling's index is not written in TEST, and
# backward would read it (a crash in layers/pooling.py, fused or not)
def has_backward(pool, phase):
    return not (pool == "sto2s2" and phase == "test")


SLOPES = {"relu": "", "leaky": "relu_param { negative_slope: 0.1 }",
          "negative": "relu_param { negative_slope: -0.2 }"}
IMAGE = (2, 4, 9, 9)
PHASES = {"train": TRAIN, "test": TEST}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("conv_key", CONVS)
def test_convolution_relu_equals_unfused(conv_key, slope, phase):
    layer = fused_layer("ConvolutionReLU", [conv(CONVS[conv_key]), SLOPES[slope]])
    run_both(parse_net(net_text(layer, [IMAGE])), PHASES[phase])


def test_convolution_relu_pairs_share_weights():
    layer = fused_layer("ConvolutionReLU", [conv(CONVS["k3s1p1"]), SLOPES["leaky"]],
                        bottoms=("a", "b"), tops=("out_a", "out_b"))
    run_both(parse_net(net_text(layer, [IMAGE, IMAGE], bottoms=("a", "b"))), TRAIN)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("conv_key,slope,pool", [
    (conv_key, slope, pool)
    for conv_key, slope in (("k3s1p1", "relu"), ("k3s2g2", "leaky"), ("k2x3s1d2", "negative"))
    for pool in POOLS if pool != "sto2s2" or slope == "relu"])   # STOCHASTIC: inputs >= 0
def test_convolution_relu_pool_equals_unfused(conv_key, slope, pool, phase):
    layer = fused_layer("ConvolutionReLUPool", [conv(CONVS[conv_key]), SLOPES[slope],
                                                POOLS[pool]])
    run_both(parse_net(net_text(layer, [IMAGE])), PHASES[phase],
             backward=has_backward(pool, phase))


def test_convolution_relu_pool_mask_top(tmp_path):
    layer = fused_layer("ConvolutionReLUPool", [conv(CONVS["k3s1p1"]), POOLS["max3s2"]],
                        tops=("out", "mask"))
    fused, _ = run_both(parse_net(net_text(layer, [IMAGE])), TRAIN, tmp_path=tmp_path)
    mask = fused.blobs["mask"].data
    assert mask.shape == fused.blobs["out"].shape and (mask >= 0).all()


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("lrn", LRNS)
@pytest.mark.parametrize("conv_key,slope,pool", [("k3s1p1", "relu", "max3s2"),
                                                 ("k3s2g2", "leaky", "ave3s2p1"),
                                                 ("k2x3s1d2", "relu", "sto2s2"),
                                                 ("k3s1p1", "negative", "max2s2p1")])
def test_convolution_relu_pool_lrn_equals_unfused(conv_key, slope, pool, lrn, phase):
    layer = fused_layer("ConvolutionReLUPoolLRN", [conv(CONVS[conv_key]), SLOPES[slope],
                                                   POOLS[pool], LRNS[lrn]])
    run_both(parse_net(net_text(layer, [IMAGE])), PHASES[phase],
             backward=has_backward(pool, phase))


IPS = {
    "plain": f"inner_product_param {{ num_output: 5 {GAUSS} }}",
    "transpose": f"inner_product_param {{ num_output: 5 transpose: true {GAUSS} }}",
    "axis2": f"inner_product_param {{ num_output: 5 axis: 2 {GAUSS} }}",
}
DROPS = {"half": "", "p0.3": "dropout_param { dropout_ratio: 0.3 }"}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("drop", DROPS)
@pytest.mark.parametrize("ip,slope", [("plain", "relu"), ("transpose", "leaky"),
                                      ("axis2", "negative")])
def test_inner_product_relu_dropout_equals_unfused(ip, slope, drop, phase):
    layer = fused_layer("InnerProductReLUDropout", [IPS[ip], SLOPES[slope], DROPS[drop]])
    fused, _ = run_both(parse_net(net_text(layer, [(3, 4, 2, 3)])), PHASES[phase])
    out = fused.blobs["out"].data
    if PHASES[phase] == TRAIN:
        assert (out == 0).any()              # dropped, as the Dropout layer drops
    else:
        assert (out != 0).all() or slope == "relu"


def test_frozen_bias_and_caffemodel_file(tmp_path):
    """A frozen bias gets no gradient in either form, an input no diff; the caffemodel file
    of the fused net loads into the unfused one."""
    specs = "loss_weight: 1 param { lr_mult: 1 } param { lr_mult: 0 }"
    layer = fused_layer("ConvolutionReLUPoolLRN", [specs, conv(CONVS["k3s1p1"]),
                                                   POOLS["max3s2"], LRNS["across3"]])
    text = net_text(layer, [IMAGE]).replace("force_backward: true\n", "")
    fused, _ = run_both(parse_net(text), TRAIN, tmp_path=tmp_path)
    weight, bias = fused.params["f"]
    assert np.abs(weight.diff).sum() > 0
    assert not bias.diff.any()
    assert not fused.blobs["data"].diff.any()     # an input needs no gradient


def test_blobs_inside_the_layer_parameter():
    """A net text that carries its weights (Net.to_proto) builds the same fused layer."""
    layer = fused_layer("InnerProductReLUDropout", [IPS["plain"], SLOPES["leaky"]])
    set_random_seed(0)
    first = Net(param=parse_net(net_text(layer, [(3, 4, 2, 3)])), phase=TEST)
    again = Net(param=first.to_proto(), phase=TEST)
    for a, b in zip(first.params["f"], again.params["f"]):
        np.testing.assert_array_equal(a.data, b.data)
    x = np.random.default_rng(0).standard_normal((3, 4, 2, 3))
    first.blobs["data"].data[...] = x
    again.blobs["data"].data[...] = x
    np.testing.assert_array_equal(first.forward()["out"], again.forward()["out"])


def test_backward_gated_on_propagate_down():
    layer, bottom, top = make_layer(fused_layer("ConvolutionReLUPool", [
        conv(CONVS["k3s1p1"]), POOLS["max3s2"]]), [np.random.default_rng(0).standard_normal(
            IMAGE)])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    bottom[0].diff[...] = 42
    layer.backward(top, [False], bottom)
    assert (bottom[0].diff == 42).all()
    assert layer.blobs[0].diff.any()
    weight_diff = layer.blobs[0].diff.copy()
    layer.param_propagate_down = [False, False]
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, weight_diff)


# --- numerical gradients (float64, one direction per input, as tests/gradcheck.py) ------------
GRADIENT_CASES = {
    "conv_relu": ("ConvolutionReLU", [conv(CONVS["k3s2g2"]), SLOPES["leaky"]]),
    "conv_relu_pool": ("ConvolutionReLUPool", [conv(CONVS["k3s1p1"]), POOLS["max2s2p1"]]),
    "conv_relu_pool_ave": ("ConvolutionReLUPool", [conv(CONVS["k2x3s1d2"]),
                                                   SLOPES["negative"], POOLS["ave3s2p1"]]),
    "conv_relu_pool_lrn": ("ConvolutionReLUPoolLRN", [conv(CONVS["k3s1p1"]), POOLS["max3s2"],
                                                      LRNS["across3"]]),
    "conv_relu_pool_lrn_within": ("ConvolutionReLUPoolLRN", [
        conv(CONVS["k3s2g2"]), SLOPES["leaky"], POOLS["ave3s2p1"], LRNS["within3"]]),
    "ip_relu_dropout": ("InnerProductReLUDropout", [IPS["plain"], SLOPES["leaky"],
                                                    DROPS["p0.3"]]),
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_gradient(case, phase):
    kind, params = GRADIENT_CASES[case]
    shape = (2, 3, 4) if kind.startswith("Inner") else IMAGE
    set_random_seed(1)
    x = np.random.default_rng(3).standard_normal(shape)
    layer, bottom, top = make_layer(fused_layer(kind, params), [x], phase=PHASES[phase])
    check_gradient(layer, bottom, top, before_forward=lambda: set_random_seed(5),
                   directions=2)


def test_gradient_exhaustive_tiny():
    set_random_seed(2)
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 5))
    layer, bottom, top = make_layer(fused_layer("ConvolutionReLUPoolLRN", [
        "convolution_param { num_output: 3 kernel_size: 2 " + GAUSS + " }",
        SLOPES["leaky"], "pooling_param { pool: MAX kernel_size: 2 stride: 1 }",
        LRNS["across3"]]), [x])
    check_gradient_exhaustive(layer, bottom, top)


# --- the fork's CaffeNet --------------------------------------------------------------------
@pytest.fixture
def intel_caffenet():
    if not INTEL_CAFFENET.is_file():
        pytest.skip(f"{INTEL_CAFFENET} is not present")
    param = read_net_param(str(INTEL_CAFFENET))
    small, _ = with_inputs(param, INTEL_CAFFENET, SMALL_SIZE)
    return param, small


def test_intel_caffenet_uses_the_fused_types(intel_caffenet):
    param, _ = intel_caffenet
    types = [lp.type for lp in param.layer]
    assert types.count("ConvolutionReLUPoolLRN") == 2
    assert types.count("ConvolutionReLU") == 2
    assert types.count("ConvolutionReLUPool") == 1
    modes = {lp.name: caffe_pb2.ConvolutionParameter.ConvMode.Name(
        lp.convolution_param.conv_mode) for lp in param.layer if lp.type in CHAINS}
    assert modes == {"conv1": "DIRECT_DCONV", "conv2": "DIRECT_SCONV", "conv3": "DIRECT_SCONV",
                     "conv4": "DIRECT_SCONV", "conv5": "DIRECT_SCONV"}
    text = INTEL_CAFFENET.read_text(encoding="utf-8")
    found = [f"{occ.line}: {describe(occ)}"
             for occ in unhonoured_fields(text, caffe_pb2.NetParameter.DESCRIPTOR)]
    assert not found, "\n".join(found)


def test_intel_caffenet_runs(intel_caffenet):
    _, small = intel_caffenet
    set_random_seed(0)
    train = Net(param=small, phase=TRAIN)
    assert [tuple(b.shape) for b in train.params["conv2"]] == [(256, 48, 5, 5), (256,)]
    fill_inputs(train)
    loss = train.forward_backward()
    assert np.isfinite(loss)
    assert all(np.isfinite(p.diff).all() for p in train.learnable_params)
    assert train.params["conv1"][0].diff.any()
    test = Net(param=small, phase=TEST)
    test.share_trained_layers_with(train)
    fill_inputs(test)
    out = test.forward()
    assert set(out) == {"accuracy", "loss"}
    assert all(np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("phase", PHASES)
def test_intel_caffenet_equals_its_unfused_net(intel_caffenet, phase):
    """The fork's file against the unfused layers it replaced (they are still in it,
    commented out), from one set of weights, with the same dropout draws in TRAIN."""
    _, small = intel_caffenet
    set_random_seed(0)
    fused = Net(param=small, phase=PHASES[phase])
    unfused = Net(param=unfuse(small), phase=PHASES[phase])
    unfused.copy_trained_layers_from(fused.to_proto())
    for net in (fused, unfused):
        fill_inputs(net)
        set_random_seed(1)
        if PHASES[phase] == TRAIN:
            net.forward_backward()
        else:
            net.forward()
    for name in ("conv1", "conv2", "conv5", "fc8", "loss"):
        np.testing.assert_array_equal(fused.blobs[name].data, unfused.blobs[name].data)
    if PHASES[phase] == TRAIN:
        for name in ("conv1", "conv3", "fc6"):
            for a, b in zip(fused.params[name], unfused.params[name]):
                np.testing.assert_array_equal(a.diff, b.diff)
