"""kernels/channel_epilogue.py and its fusion (net_fusion.EpilogueFusion): a BatchNorm with
stored statistics (with the Scale and ReLU after it) in place on a convolution's top, applied
by the convolution as it writes, holds the bits of the layers run one by one: in the kernel
on special values, on every convolution path, and in a forward-only Net."""
import numpy as np
import pytest
from google.protobuf import text_format

from net_bits import assert_same_bits
import caffe_lite as caffe
from caffe_lite import threads
from caffe_lite.kernels import batch_norm as K
from caffe_lite.kernels import blocked_conv, conv as conv_kernels, conv_engines
from caffe_lite.kernels.channel_epilogue import ChannelEpilogue
from caffe_lite.kernels.conv import ConvGeometry
from caffe_lite.kernels.depthwise_conv import depthwise_forward
from caffe_lite.net import Net
from caffe_lite.net_fusion import EpilogueFusion
from caffe_lite.proto import caffe_pb2

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def _statistics(channels, rng):
    mean = rng.standard_normal(channels).astype(np.float32)
    factor = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    scale = rng.standard_normal(channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    return mean, factor, scale, bias


@pytest.mark.parametrize("relu", [None, 0.0, 0.25])
@pytest.mark.parametrize("form", ["bvlc", "bvlc+scale", "bvlc+scale+bias", "nvcaffe"])
def test_values_are_the_batch_norm_kernels_own(form, relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 29)).astype(np.float32)
    x[0, :, :len(SPECIAL)] = SPECIAL
    mean, factor, scale, bias = _statistics(4, rng)
    expected = x.copy()
    if form == "bvlc":
        K.bvlc_normalize_global(x, mean, factor, expected, relu)
        epilogue = ChannelEpilogue.make(mean, factor, True, relu_slope=relu)
    elif form.startswith("bvlc+"):
        b = bias if form.endswith("bias") else np.empty(0, np.float32)
        K.bvlc_normalize_scale(x, mean, factor, np.empty_like(x), scale, b, expected, relu)
        epilogue = ChannelEpilogue.make(mean, factor, True, scale, b, relu)
    else:
        K.nv_normalize(x, mean, factor, scale, bias, expected, None, relu)
        epilogue = ChannelEpilogue.make(mean, factor, False, scale, bias, relu)
    for apply in (lambda y: epilogue.apply(y), lambda y: epilogue.apply_images(y, 0, 3),
                  lambda y: epilogue.apply_channels(y, 0, 4)):
        y = x.copy()
        apply(y)
        assert np.array_equal(_bits(y), _bits(expected))
    # a channel of constants (a sparse layer's dropped filter) gets the same value
    constants = epilogue.of_values(x[0, :, 3])
    assert np.array_equal(_bits(constants), _bits(expected[0, :, 3]))


def _epilogue(channels, relu=0.0, divide=False, seed=3):
    mean, factor, scale, bias = _statistics(channels, np.random.default_rng(seed))
    return ChannelEpilogue.make(mean, factor, divide, scale, bias, relu)


def _same_with_and_after(forward, x_shape, w_shape, y_shape, bias=True, seed=0, **kw):
    """forward(x, w, b, y, epilogue=...) against forward(...) then epilogue.apply, bitwise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    for divide in (False, True):
        epilogue = _epilogue(y_shape[1], divide=divide, **kw)
        fused, after = np.empty(y_shape, np.float32), np.empty(y_shape, np.float32)
        forward(x, w, b, fused, epilogue=epilogue)
        forward(x, w, b, after)
        epilogue.apply(after)
        assert np.array_equal(_bits(fused), _bits(after))


# (batch, size, kernel, stride, pad): 3x3 on phases in one pass of nine taps, on padded
# planes, strided on phases, and stride 4 on the row loops
@pytest.mark.parametrize("n,size,k,stride,pad", [(2, 14, 3, 1, 1), (2, 9, 5, 1, 2),
                                                 (2, 15, 3, 2, 1), (1, 17, 3, 4, 0),
                                                 (2, 6, 2, 1, 0)])
@pytest.mark.parametrize("workers", [1, 2])
def test_depthwise_planes(monkeypatch, n, size, k, stride, pad, workers):
    monkeypatch.setattr(threads, "get_num_threads", lambda: workers)
    geo = ConvGeometry(k, k, pad, pad, stride, stride, group=6)
    out = (size + 2 * pad - k) // stride + 1

    def forward(x, w, b, y, epilogue=None):
        depthwise_forward(x, w, b, geo, y, epilogue)
    _same_with_and_after(forward, (n, 6, size, size), (6, 1, k, k), (n, 6, out, out))


# lanes (16 images), flat (one image) and phases (one image, stride 2); a compacted weight
# whose all-zero filters the tiles drop
@pytest.mark.parametrize("n,stride,drop", [(16, 1, False), (1, 1, False), (1, 2, False),
                                           (16, 1, True), (1, 1, True)])
@pytest.mark.parametrize("workers", [1, 2])
def test_blocked_tiles(monkeypatch, n, stride, drop, workers):
    monkeypatch.setattr(threads, "get_num_threads", lambda: workers)
    geo = ConvGeometry(3, 3, 1, 1, stride, stride, group=2)
    out = (10 + 2 - 3) // stride + 1

    def forward(x, w, b, y, epilogue=None):
        if drop:
            w = w.copy()
            w[[1, 6, 7, 12]] = 0
            groups = blocked_conv.pack_groups(w, geo.group)
            blocked_conv.blocked_conv_forward(x, w, b, geo, y, groups=groups,
                                              epilogue=epilogue)
        else:
            blocked_conv.blocked_conv_forward(x, w, b, geo, y, epilogue=epilogue)
    _same_with_and_after(forward, (n, 6, 10, 10), (18, 3, 3, 3), (n, 18, out, out))
    _same_with_and_after(forward, (n, 6, 10, 10), (18, 3, 3, 3), (n, 18, out, out),
                         bias=False)


# a pointwise layer over images, one image split by output channels, the lowered path over
# batch-minor copies and image by image, a classifier of one pixel, and direct loops
@pytest.mark.parametrize("n,c,size,m,k,stride,group", [
    (4, 8, 12, 16, 1, 1, 1), (1, 64, 24, 128, 3, 1, 1), (3, 6, 7, 8, 3, 1, 2),
    (1, 6, 7, 8, 3, 2, 1), (5, 32, 1, 10, 1, 1, 1), (3, 3, 20, 8, 3, 2, 1)])
@pytest.mark.parametrize("workers", [1, 2])
def test_engine_paths(monkeypatch, n, c, size, m, k, stride, group, workers):
    monkeypatch.setattr(threads, "get_num_threads", lambda: workers)
    monkeypatch.setattr(conv_kernels, "ONE_IMAGE_SPLIT_MIN_MACS", 1 << 16)
    pad = k // 2
    geo = ConvGeometry(k, k, pad, pad, stride, stride, group=group)
    out = (size + 2 * pad - k) // stride + 1
    lowered = conv_engines.conv_engine("LOWERED_GEMM")
    lowered.forward = lambda x, w, b, geo, y, epilogue=None: conv_kernels.conv2d_forward(
        x, w, b, geo, y, epilogue=epilogue)         # the lowered paths, never the tiles
    for engine in [lowered] + [conv_engines.conv_engine(mode) for mode in (
            "LOWERED_GEMM", "LOWERED_CSRMM", "LOWERED_CCNMM", "DIRECT_SCONV")]:

        def forward(x, w, b, y, epilogue=None):
            w = w.copy()
            w[::3] = 0                  # zero filters for the sparse modes to drop
            engine.forward(x, w, b, geo, y, epilogue=epilogue)
        _same_with_and_after(forward, (n, c, size, size), (m, c // group, k, k),
                             (n, m, out, out), relu=0.25)


# --- Net ----------------------------------------------------------------------------------
HEAD = """
name: "epilogues"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 7 dim: 7 } } }
"""
# BVLC: conv -> BatchNorm -> Scale -> ReLU, all in place; NVCaffe's scale_bias form with a
# ReLU; a depthwise layer with a BatchNorm alone; a Scale without bias and no ReLU
CHAINS = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 6 kernel_size: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2"
        batch_norm_param { scale_bias: true } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2"
        relu_param { negative_slope: 0.1 } }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 6 stride: 2
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
        convolution_param { num_output: 5 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn4" type: "BatchNorm" bottom: "conv4" top: "conv4" }
layer { name: "scale4" type: "Scale" bottom: "conv4" top: "conv4" }
"""
# not fused: a BatchNorm that writes a blob of its own (the convolution's top keeps its
# values), and a ReLU that does (the BatchNorm alone folds)
APART = """
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
        convolution_param { num_output: 5 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn5" type: "BatchNorm" bottom: "conv5" top: "bn5" }
layer { name: "relu5" type: "ReLU" bottom: "bn5" top: "bn5" }
layer { name: "conv6" type: "Convolution" bottom: "bn5" top: "conv6"
        convolution_param { num_output: 5 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn6" type: "BatchNorm" bottom: "conv6" top: "conv6" }
layer { name: "relu6" type: "ReLU" bottom: "conv6" top: "relu6" }
"""
FUSED = {"conv1": "relu1", "conv2": "relu2", "conv3": "bn3", "conv4": "scale4",
         "conv6": "bn6"}


def _nets(phase=caffe.TEST, forward_only=True):
    param = text_format.Parse(HEAD + CHAINS + APART, caffe_pb2.NetParameter())
    fused = Net(param=param, phase=phase, forward_only=forward_only)
    plain = Net(param=param, phase=phase, forward_only=forward_only)
    plain._fusions, plain._kept_tops = {}, []
    rng = np.random.default_rng(2)
    for name, blobs in fused.params.items():
        for k, (blob, twin) in enumerate(zip(blobs, plain.params[name])):
            blob.data[...] = rng.standard_normal(blob.data.shape)
            if name.startswith("bn") and k < 3:     # stored statistics
                blob.data[...] = [np.abs(blob.data), np.abs(blob.data) + 0.5, 1.5][k]
            twin.data[...] = blob.data
    data = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    fused.blobs["data"].data[...] = data
    plain.blobs["data"].data[...] = data
    return fused, plain


def _epilogue_fusions(net):
    names = net.layer_names
    return {names[i]: names[f.last] for i, f in net._fusions.items()
            if isinstance(f, EpilogueFusion)}


def test_which_chains_fold_into_the_convolution():
    fused, _ = _nets()
    assert _epilogue_fusions(fused) == FUSED
    # a TRAIN net's BatchNorms use the batch's statistics: nothing to fold
    train, _ = _nets(caffe.TRAIN, forward_only=False)
    assert _epilogue_fusions(train) == {}


def test_a_forward_only_pass_folds_them_with_the_same_bits():
    fused, plain = _nets()
    names = list(fused.layer_names)

    def not_run(*args):
        raise AssertionError("a folded layer ran on its own")
    for i, fusion in fused._fusions.items():
        if names[i] in FUSED:
            for rec in fusion.followers:
                rec.layer.forward = not_run
    for net in (fused, plain):
        net.forward()
    assert_same_bits(fused, plain)
    assert (fused.blobs["conv1"].data == 0).any() and (fused.blobs["conv5"].data < 0).any()


def test_a_pass_that_a_backward_follows_runs_the_layers():
    fused, plain = _nets(forward_only=False)
    ran = []
    bn1 = fused.layer_dict["bn1"]
    forward = bn1.forward

    def counted(*args):
        ran.append(1)
        return forward(*args)
    bn1.forward = counted
    for net in (fused, plain):
        net.forward()
    assert ran
    assert_same_bits(fused, plain)
    fused.forward_only = True           # settable later: the next pass folds
    ran.clear()
    fused.forward()
    assert not ran


def test_a_partial_pass_folds_only_what_it_runs():
    fused, plain = _nets()
    names = list(fused.layer_names)
    for net in (fused, plain):
        net.forward_from_to(0, names.index("bn1"))
        net.blobs["conv1"].data[...] -= 0.25            # a user's edit between passes
        net.forward_from_to(names.index("scale1"), len(names) - 1)
    assert_same_bits(fused, plain)


def test_an_engine_without_an_epilogue_keeps_the_batch_norm_apart():
    class Older(conv_engines.LoweredGemmEngine):
        def forward(self, x, w, bias, geo, y):
            super().forward(x, w, bias, geo, y)
    fused, _ = _nets()
    conv = fused.layer_dict["conv1"]
    assert conv.fuses_channel_epilogue
    conv.engine = Older()
    assert not conv.fuses_channel_epilogue
