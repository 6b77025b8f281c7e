"""DeePhi's channel pruning rules (#13) on small nets: which channels go together
(compress/channel_graph.py), the masked and the transformed model (channel_prune.py), the
choice of ratios, and DeePhi's counting (deephi_stat.py) against hand counts and the
tutorial's miniVggNet figures (49,053,696 operations, 68,389 parameters)."""
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.common import TEST
from caffe_lite.compress import channel_prune, deephi_stat
from caffe_lite.compress.channel_graph import channel_graph
from caffe_lite.io.prototxt import read_net_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ("xilinx-cifar10-minivggnet/docs/ML-CIFAR10-Caffe/deephi/miniVggNet/pruning/"
            "train_val.prototxt")
CORPUS_TRAIN_VAL = ROOT.parent / "shared" / "corpus" / TUTORIAL
COPY_TRAIN_VAL = ROOT / "tests" / "data" / "deephi_minivggnet" / "train_val.prototxt"


def conv(name, bottom, n, k=3, pad=1, extra=""):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} {extra} }} }}')


def layer(name, kind, bottoms, top, extra=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {b} top: "{top}" {extra} }}'


# A residual block (conv1 + conv2b added), BatchNorm / Scale / in-place ReLU, a Concat of the
# block with another branch, then a convolution, pooling, dropout and a fully connected layer.
RESIDUAL = "\n".join([
    'name: "residual"',
    'layer { name: "data" type: "Input" top: "data" '
    'input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }',
    conv("conv1", "data", 6),
    layer("bn1", "BatchNorm", ["conv1"], "bn1"),
    layer("scale1", "Scale", ["bn1"], "scale1", "scale_param { bias_term: true }"),
    layer("relu1", "ReLU", ["scale1"], "scale1"),
    conv("conv2a", "scale1", 4),
    layer("relu2a", "ReLU", ["conv2a"], "conv2a"),
    conv("conv2b", "conv2a", 6),
    layer("bn2b", "BatchNorm", ["conv2b"], "bn2b"),
    layer("sum", "Eltwise", ["scale1", "bn2b"], "sum"),
    layer("relu_sum", "ReLU", ["sum"], "sum"),
    conv("conv3", "data", 5, k=1, pad=0),
    layer("cat", "Concat", ["sum", "conv3"], "cat"),
    conv("conv4", "cat", 7),
    layer("pool", "Pooling", ["conv4"], "pool", "pooling_param { pool: MAX kernel_size: 2 "
                                                "stride: 2 }"),
    layer("drop", "Dropout", ["pool"], "pool"),
    layer("fc", "InnerProduct", ["pool"], "fc", "inner_product_param { num_output: 3 }"),
])


def build(text):
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    net = Net(param=param, phase=TEST)
    rng = np.random.default_rng(0)
    for name, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape)
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.5     # variance
            blobs[2].data[...] = 1                                # moving-average factor
    return param, net


def graph_of(net):
    blob_shapes = {k: b.shape for k, b in net.blobs.items()}
    param_shapes = {k: [b.shape for b in v] for k, v in net.params.items()}
    return channel_graph(net.net_param, blob_shapes, param_shapes), blob_shapes, param_shapes


def params_of(net):
    return {k: [np.array(b.data) for b in v] for k, v in net.params.items()}


def test_residual_block_and_concat_channel_groups():
    _, net = build(RESIDUAL)
    graph, _, _ = graph_of(net)
    groups = {tuple(g.producers): g for g in graph.groups}
    assert sorted(groups) == [("conv1", "conv2b"), ("conv2a",), ("conv3",), ("conv4",)]
    assert all(g.fixed is None for g in groups.values())
    assert groups[("conv1", "conv2b")].size == 6
    cut = {(s.layer, s.blob, s.axis): s for s in graph.slicings}
    # the Concat's channels: the block's group, then conv3's
    segments = cut[("conv4", 0, 1)].layout.segments
    assert [(graph.root(s), n) for s, n in segments] == [
        (groups[("conv1", "conv2b")].space, 6), (groups[("conv3",)].space, 5)]
    # the fully connected layer reads conv4's channels, 4 x 4 pooled entries each
    assert cut[("fc", 0, 1)].inner == 16
    # both BatchNorms and the Scale follow the block's group (statistics, not the factor)
    for name, blob in (("bn1", 0), ("bn1", 1), ("bn2b", 0), ("bn2b", 1), ("scale1", 0),
                       ("scale1", 1)):
        layout = cut[(name, blob, 0)].layout
        assert graph.root(layout.segments[0][0]) == groups[("conv1", "conv2b")].space
    assert ("bn1", 2, 0) not in cut


@pytest.mark.parametrize("text, fixed", [
    # a convolution that is the net's output, one read by a Softmax, a grouped one
    ("\n".join(['layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                'dim: 4 dim: 5 dim: 5 } } }', conv("c", "d", 4)]), "output of the net"),
    ("\n".join(['layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                'dim: 4 dim: 5 dim: 5 } } }', conv("c", "d", 4),
                layer("s", "Softmax", ["c"], "s")]), "read by layer 's' (Softmax)"),
    ("\n".join(['layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                'dim: 4 dim: 5 dim: 5 } } }', conv("c", "d", 4),
                conv("g", "c", 4, extra="group: 2"), layer("s", "Softmax", ["g"], "s")]),
     "grouped convolution 'g'"),
    # an Eltwise with the net's input: the input's channels cannot go
    ("\n".join(['layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                'dim: 4 dim: 5 dim: 5 } } }', conv("c", "d", 4),
                layer("e", "Eltwise", ["c", "d"], "e"), conv("c2", "e", 2),
                layer("s", "Softmax", ["c2"], "s")]), "input of the net"),
])
def test_channels_that_cannot_be_pruned_are_fixed(text, fixed):
    _, net = build(text)
    graph, _, _ = graph_of(net)
    group = next(g for g in graph.groups if "c" in g.producers)
    assert group.fixed and fixed in group.fixed


def residual_keep(graph):
    groups = {tuple(g.producers): g.space for g in graph.groups}
    keep = {}
    for producers, drop in ((("conv1", "conv2b"), [1, 4]), (("conv2a",), [0]),
                            (("conv3",), [2, 3]), (("conv4",), [0, 5, 6])):
        size = next(g.size for g in graph.groups if g.space == groups[producers])
        keep[groups[producers]] = ~np.isin(np.arange(size), drop)
    return keep


def forward(net, params, x):
    for name, blobs in net.params.items():
        for blob, array in zip(blobs, params[name]):
            blob.data[...] = array
    net.blobs[net.inputs[0]].data[...] = x
    net.forward()
    return np.array(net.blobs[net.outputs[0]].data)


def test_transformed_model_computes_what_the_masked_one_does():
    param, net = build(RESIDUAL)
    graph, _, _ = graph_of(net)
    params = params_of(net)
    keep = residual_keep(graph)
    x = np.random.default_rng(1).standard_normal(net.blobs["data"].shape)
    masked = channel_prune.masked(graph, params, keep)
    expected = forward(net, masked, x)
    small_param, small = channel_prune.transformed(graph, param, params, keep)
    outputs = {lp.name: lp.convolution_param.num_output for lp in small_param.layer
               if lp.type == "Convolution"}
    assert outputs == {"conv1": 4, "conv2a": 3, "conv2b": 4, "conv3": 3, "conv4": 4}
    small_net = Net(param=small_param, phase=TEST)
    assert small_net.params["conv4"][0].shape == (4, 7, 3, 3)
    assert small_net.params["fc"][0].shape == (3, 4 * 16)
    assert small_net.params["bn1"][2].shape == (1,)
    got = forward(small_net, small, x)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # the unpruned model differs: the check is not vacuous
    assert not np.allclose(forward(net, params, x), expected, rtol=1e-3)
    # the masked model reads back as this pruning
    pruned = channel_prune.pruned_channels(graph, masked)
    assert all(np.array_equal(pruned[root], ~k) for root, k in keep.items())


def test_depthwise_convolution_follows_its_input():
    text = "\n".join([
        'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 '
        'dim: 6 dim: 6 } } }',
        conv("pw", "d", 4, k=1, pad=0), conv("dw", "pw", 4, extra="group: 4"),
        conv("out", "dw", 3), layer("s", "Softmax", ["out"], "s")])
    param, net = build(text)
    graph, _, _ = graph_of(net)
    (group,) = graph.prunable
    assert group.producers == ["pw"]
    keep = {group.space: np.array([True, False, True, False])}
    params = params_of(net)
    x = np.random.default_rng(2).standard_normal(net.blobs["d"].shape)
    expected = forward(net, channel_prune.masked(graph, params, keep), x)
    small_param, small = channel_prune.transformed(graph, param, params, keep)
    dw = next(lp for lp in small_param.layer if lp.name == "dw").convolution_param
    assert (dw.num_output, dw.group) == (2, 2)
    got = forward(Net(param=small_param, phase=TEST), small, x)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_keep_lowest_drops_pruned_channels_first_then_small_norms():
    norms = np.array([5.0, 0.0, 1.0, 3.0, 2.0])
    pruned = np.array([False, True, False, False, False])
    assert keep_list(norms, pruned, 3) == [0, 3]
    assert keep_list(norms, pruned, 0) == [0, 2, 3, 4]      # never fewer than already gone
    assert keep_list(norms, pruned, 9) == [0]               # one channel always stays


def keep_list(norms, pruned, count):
    return list(np.flatnonzero(channel_prune.keep_lowest(norms, pruned, count)))


def test_plan_prunes_the_least_sensitive_group_most():
    ratios = channel_prune.ANA_RATIOS
    # group 0 loses accuracy fast, group 1 barely
    curves = {0: channel_prune.loss_curve(0.9, [0.9 - 0.1 * r * 10 for r in ratios]),
              1: channel_prune.loss_curve(0.9, [0.9 - 0.001 * r * 10 for r in ratios])}
    sizes = {0: 10, 1: 10}

    def operations(counts):           # each channel of either group costs 1
        return sum(sizes[g] - n for g, n in counts.items())

    counts = channel_prune.plan_pruned(sizes, curves, {}, operations, 14)
    assert operations(counts) <= 14 and counts[1] > counts[0]
    assert operations(counts) >= 13                         # no needless overshoot
    assert channel_prune.plan_pruned(sizes, curves, {}, operations, 1) is None
    floors = {0: 4, 1: 0}
    assert channel_prune.plan_pruned(sizes, curves, floors, operations, 20)[0] == 4


HAND = "\n".join([
    'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 dim: 5 '
    'dim: 5 } } }',
    conv("c", "d", 3, k=3, pad=0),
    layer("bn", "BatchNorm", ["c"], "bn"),
    layer("sc", "Scale", ["bn"], "sc", "scale_param { bias_term: true }"),
    layer("ip", "InnerProduct", ["sc"], "ip", "inner_product_param { num_output: 4 }"),
])


@pytest.mark.parametrize("kept, expected", [
    # conv: 3 x 3 x 3 outputs x (2 x 2 x 3 x 3 + 1) = 999 ops, 3 x 18 + 3 = 57 params;
    # BatchNorm 3 + 3 + 1, Scale 3 + 3: DeePhi's 70 parameters. ip: 27 inputs:
    # 4 x (2 x 27 + 1) = 220 ops, 4 x 27 + 4 = 112 params.
    (None, (999, 70, 999 + 220, 70 + 112)),
    # 2 channels left: conv 2 x 9 x 37 = 666 ops, 38 params; BN 5, Scale 4;
    # ip 18 inputs: 4 x 37 = 148 ops, 76 params
    (2, (666, 47, 666 + 148, 47 + 76)),
])
def test_stat_against_hand_counts(kept, expected):
    _, net = build(HAND)
    graph, shapes, pshapes = graph_of(net)
    kept = None if kept is None else {graph.prunable[0].space: kept}
    totals = deephi_stat.totals(deephi_stat.layer_costs(net.net_param, graph, shapes,
                                                        pshapes, kept))
    assert (totals.operations, totals.params, totals.full_operations,
            totals.full_params) == expected


def with_input_layers(param):
    """The train_val with its data layers as 2 x 3 x 32 x 32 Input layers (no LMDB)."""
    for lp in param.layer:
        if lp.type == "Data":
            tops, name, rules = list(lp.top), lp.name, list(lp.include)
            lp.Clear()
            lp.name, lp.type = name, "Input"
            lp.top.extend(tops)
            lp.include.extend(rules)
            lp.input_param.shape.add().dim.extend([2, 3, 32, 32])
            lp.input_param.shape.add().dim.extend([2])
    return param


@pytest.mark.parametrize("path", [
    pytest.param(CORPUS_TRAIN_VAL, id="corpus", marks=pytest.mark.skipif(
        not CORPUS_TRAIN_VAL.is_file(), reason=f"{CORPUS_TRAIN_VAL} is not present")),
    pytest.param(COPY_TRAIN_VAL, id="tests-data")])
def test_tutorial_minivggnet_counts(path):
    net = Net(param=with_input_layers(read_net_param(str(path))), phase=TEST)
    graph, shapes, pshapes = graph_of(net)
    assert [g.producers for g in graph.prunable] == [["conv1"], ["conv2"], ["conv3"],
                                                      ["conv4"]]
    rows = deephi_stat.layer_costs(net.net_param, graph, shapes, pshapes)
    totals = deephi_stat.totals(rows)
    assert (totals.operations, totals.params) == (49_053_696, 68_389)
    # fc1: 512 x (2 x 4096 + 1), fc2: 10 x (2 x 512 + 1); their weights and biases
    assert totals.full_operations == 49_053_696 + 512 * 8193 + 10 * 1025
    assert totals.full_params == 68_389 + 4096 * 512 + 512 + 512 * 10 + 10
    # the tutorial's final model (regular_rate_0.7/final.prototxt): 14, 20, 32, 40 channels
    kept = dict(zip((g.space for g in graph.prunable), (14, 20, 32, 40)))
    final = deephi_stat.totals(deephi_stat.layer_costs(net.net_param, graph, shapes,
                                                       pshapes, kept))
    assert final.operations == (14 * 1024 * 55 + 20 * 1024 * (2 * 14 * 9 + 1)
                                + 32 * 256 * (2 * 20 * 9 + 1) + 40 * 256 * (2 * 32 * 9 + 1))
