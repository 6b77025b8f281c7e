"""Every classification net of ../shared/corpus builds, and the small ones run.

Data layers (Data, ImageData, HDF5Data, ...) become Input layers of batch 2 with the net's
crop size (or the dataset's image size: 28 for MNIST, 32 for CIFAR-10, 64 for Tiny ImageNet,
224 otherwise); deploy inputs keep their shape with batch 2. Nets made for ImageNet-sized
inputs are first tried at 67x67 to keep memory and time small, and at their own size when a
layer needs more. A net that builds runs forward and backward (TRAIN) when its forward costs
under FLOP_BUDGET; the others are only built.

A net that uses a fork's layer type caffe-lite does not implement yet is a strict expected
failure naming the issue that will implement it (FORK_LAYER_TYPES): when that issue lands the
net builds, the test passes unexpectedly and fails, and the type leaves the table. Until then
the type must fail with the one-line unknown-layer error naming the file and line.
Solver files and DeePhi prune configs are not nets and are not collected here.
"""
import numpy as np
import pytest

import caffe_lite as caffe
from caffe_lite.errors import CaffeError
from caffe_lite.io.prototxt import read_net_param
from caffe_lite.layers import create_layer
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

import corpus

FLOP_BUDGET = 120e6          # forward FLOPs (batch 2) under which a net runs fwd + bwd
BATCH = 2
SMALL_SIZE = 67              # smallest input AlexNet / CaffeNet accept

DATA_TYPES = {"Data", "ImageData", "HDF5Data", "ImageLabelData", "WindowData", "MemoryData",
              "AnnotatedData", "VideoData", "ImageSegData", "Python"}
# BVLC Caffe 1.0's layer types: an unknown-type error for one of these is a missing layer.
BVLC_TYPES = {
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip",
    "Concat", "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout",
    "DummyData", "ELU", "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten",
    "HDF5Data", "HDF5Output", "HingeLoss", "Im2col", "ImageData", "InfogainLoss",
    "InnerProduct", "Input", "LRN", "LSTM", "LSTMUnit", "Log", "MVN", "MemoryData",
    "MultinomialLogisticLoss", "PReLU", "Parameter", "Pooling", "Power", "RNN", "ReLU",
    "Reduction", "Reshape", "SPP", "Scale", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence",
    "Slice", "Softmax", "SoftmaxWithLoss", "Split", "Swish", "TanH", "Threshold", "Tile",
    "WindowData"}

# Fork layer types caffe-lite does not implement, and what will. Data layers (caffe-jacinto's
# ImageLabelData among them) become Input layers here, so only the forks' other types count.
_SEGMENTATION = ("not planned: caffe-jacinto 0.15's segmentation layers; no corpus file uses "
                 "them")
FORK_LAYER_TYPES = {
    "IOUAccuracy": _SEGMENTATION, "SegmentationAccuracy": _SEGMENTATION,
    "SoftmaxWithWeightedLoss": _SEGMENTATION, "ImageLabelTransformation": _SEGMENTATION,
    "Sparsify": "not planned: SSL master's force-regularization layer",
    "SymmetricRectify": "not planned: SSL master's force-regularization layer",
}


def fork_types(path):
    return sorted(corpus.named_types(path) & FORK_LAYER_TYPES.keys())


def expected_failure(path):
    """The strict xfail of a net that uses a fork layer type from FORK_LAYER_TYPES."""
    types = fork_types(path)
    if not types:
        return ()
    named = ", ".join(f"{t} ({FORK_LAYER_TYPES[t]})" for t in types)
    plural = "s" if len(types) > 1 else ""
    return pytest.mark.xfail(strict=True, raises=CaffeError,
                             reason=f"unknown layer type{plural} {named}")


def natural_size(path, lp):
    tp = lp.transform_param
    if tp.crop_size:
        return tp.crop_size
    if lp.type == "ImageData" and lp.image_data_param.new_height:
        return lp.image_data_param.new_height
    text = str(path).lower() + " " + lp.data_param.source.lower()
    for key, size in (("mnist", 28), ("cifar", 32), ("tinyimagenet", 64)):
        if key in text:
            return size
    return 224


def channels(path, lp):
    n = len(lp.transform_param.mean_value)
    if n in (1, 3):
        return n
    return 1 if "mnist" in (str(path) + lp.data_param.source).lower() else 3


def with_inputs(param, path, size=None):
    """A copy of `param` whose data layers are Input layers; `size` overrides the spatial
    size of 4-d inputs. Returns (param, spatial size used or None)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    used = None
    for lp in out.layer:
        if is_data_layer(lp):
            s = size or natural_size(path, lp)
            used = max(used or 0, s)
            shapes = [[BATCH, channels(path, lp), s, s]] + [[BATCH]] * (len(lp.top) - 1)
        elif lp.type == "Input":
            shapes = []
            given = list(lp.input_param.shape)
            for i in range(len(lp.top)):
                dims = list(given[0 if len(given) == 1 else i].dim) if given else [BATCH]
                dims[0] = BATCH
                if len(dims) == 4:
                    if size:
                        dims[2] = dims[3] = size
                    used = max(used or 0, dims[2])
                shapes.append(dims)
        else:
            continue
        rules = (list(lp.include), list(lp.exclude))
        name, tops = lp.name, list(lp.top)
        lp.Clear()
        lp.name, lp.type = name, "Input"
        lp.top.extend(tops)
        lp.include.extend(rules[0])
        lp.exclude.extend(rules[1])
        for dims in shapes:
            lp.input_param.shape.add().dim.extend(dims)
    return out, used


def forward_flops(net):
    flops = 0
    for layer, top in zip(net.layers, net.top_vecs):
        if layer.blobs and top and top[0].num_axes >= 2 and layer.type != "BatchNorm":
            flops += 2 * layer.blobs[0].count * (top[0].count // top[0].shape[1])
    return flops


def build(param, phase):
    return Net(param=param, phase=phase)


def fill_inputs(net):
    rng = np.random.default_rng(0)
    for name in net.inputs:
        blob = net.blobs[name]
        if blob.num_axes <= 1 or blob.count == BATCH:
            blob.data[...] = np.arange(blob.count).reshape(blob.shape) % 2   # valid labels
        else:
            blob.data[...] = rng.standard_normal(blob.shape)


def is_data_layer(lp):
    return lp.type in DATA_TYPES and not (lp.type == "Python" and len(lp.bottom))


@pytest.mark.parametrize("path", corpus.params("net", expected_failure))
def test_corpus_net(path):
    param = read_net_param(str(path))
    assert param.layer, f"{path} parses as a NetParameter but holds no layers"
    caffe.set_random_seed(0)
    first, size = with_inputs(param, path)
    net = small = None
    if size and size > 100:
        small, _ = with_inputs(param, path, SMALL_SIZE)
        try:
            net = build(small, caffe.TRAIN)
        except (CaffeError, ValueError):
            net = small = None
    if net is None:
        net = build(first, caffe.TRAIN)
    if forward_flops(net) > FLOP_BUDGET:
        return
    fill_inputs(net)
    loss = net.forward_backward()
    assert np.isfinite(loss)
    for p in net.learnable_params:
        assert np.all(np.isfinite(p.diff))
    test_net = build(small or first, caffe.TEST)
    test_net.share_trained_layers_with(net)
    fill_inputs(test_net)
    out = test_net.forward()
    assert all(np.all(np.isfinite(v)) for v in out.values())


def first_unknown_layer(param, lines):
    """(layer, line) of the first non-data layer whose type caffe-lite lacks, or None."""
    known = set(caffe.layer_type_list())
    return next(((lp, line) for lp, line in zip(param.layer, lines)
                 if lp.type not in known and not is_data_layer(lp)), None)


FORK_NETS = [p for p in corpus.params("net") if p.values[0] is None or fork_types(p.values[0])]


@pytest.mark.parametrize("path", FORK_NETS)
def test_unknown_fork_layer_is_one_located_line(path):
    param, lines = read_net_param(str(path), with_lines=True)
    found = first_unknown_layer(param, lines)
    assert found, f"every layer type of {path} is implemented: update FORK_LAYER_TYPES"
    lp, line = found
    assert lp.type not in BVLC_TYPES, f"BVLC layer type {lp.type} is not implemented"
    assert lp.type in FORK_LAYER_TYPES, f"{lp.type} is in no issue of FORK_LAYER_TYPES"
    with pytest.raises(CaffeError) as err:
        create_layer(lp, where=(str(path), line))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}: Unknown layer type: {lp.type} (known types: "), \
        msg[:300]
