"""BatchNorm folding (compress/bn_fold.py): hand-computed folds, random nets in every
BatchNorm layout, the graph rules, removal, and TI's JacintoNet11 deploy nets of each
vintage from the corpus.

Bound for the random nets. The reference is the unfolded net run in float64 on the same
float32 values. y = a * (conv + b - mean) + beta with K = (C / group) * 9 products per
output; M = sum |w x| + |b| (an independent float64 NumPy convolution of |x|, |W|, |b|),
Q = |a| (M + |mean|) + |beta|. The float32 unfolded net rounds the K + 1 term sum
((K + 3) eps M), the subtraction, eps + var, the square root, the multiplication by the
inverse, by gamma and the addition of beta (each eps Q at most): (K + 9) eps Q. The folded
net rounds W a and the new bias once each, then the K + 1 term sum: (K + 5) eps Q. Both are
checked against (K + 10) eps Q (assert_f32_sum_close with terms = K + 8), which covers the
float32 eps against the float64 one as well. For K = 18 or 36 that is about 4e-6 Q,
within the issue's 1e-5 relative.
"""
import numpy as np
import pytest
from corpus import CORPUS
from google.protobuf import text_format
from gradcheck import assert_f32_sum_close

from caffe_lite.common import TEST
from caffe_lite.compress import bn_fold
from caffe_lite.errors import CaffeError
from caffe_lite.io.netstate import filter_net
from caffe_lite.io.prototxt import read_net_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

F32 = np.float32
CHANNELS, OUTPUTS = 4, 6

INPUT = ('layer { name: "data" type: "Input" top: "data" '
         'input_param { shape { dim: 2 dim: 4 dim: 5 dim: 5 } } }\n')
# name -> (batch_norm layer fields, layout our BatchNorm picks, eps it uses)
LAYOUTS = {
    "bvlc": ("batch_norm_param { eps: 1e-3 }", "bvlc", 1e-3),
    "bvlc-factor-0": ("batch_norm_param { eps: 1e-3 }", "bvlc", 1e-3),
    "nvcaffe-3-blobs": ("batch_norm_param { eps: 1e-4 }", "bvlc", 1e-4),
    "nvcaffe-0.16": ("batch_norm_param { eps: 1e-4 scale_bias: true }", "nvcaffe-0.16", 1e-4),
    # eps below 1e-5 is raised to 1e-5; variances of that size make it matter
    "nvcaffe-0.16-eps-clamp": ("batch_norm_param { eps: 1e-8 scale_bias: true }",
                               "nvcaffe-0.16", float(F32(1e-5))),
    "nvcaffe-0.15": (('param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 0 } '
                      'param { lr_mult: 0 } batch_norm_param { eps: 1e-4 '
                      'scale_filler { type: "constant" value: 1 } '
                      'bias_filler { type: "constant" value: 0 } }'), "nvcaffe-0.15", 1e-4),
}


def net_text(layout, bias=True, inplace=False, group=1, scale=None):
    """Input -> conv -> bn [-> Scale] -> ReLU; scale: None, "bias" or "no-bias"."""
    bn_top = "conv" if inplace else "bn"
    text = INPUT + (
        f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        f'convolution_param {{ num_output: {OUTPUTS} kernel_size: 3 pad: 1 group: {group} '
        f'bias_term: {"true" if bias else "false"} }} }}\n'
        f'layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "{bn_top}" '
        f'{LAYOUTS[layout][0]} }}\n')
    top = bn_top
    if scale:
        top = bn_top if inplace else "scaled"
        text += (f'layer {{ name: "scale" type: "Scale" bottom: "{bn_top}" top: "{top}" '
                 f'scale_param {{ bias_term: {"true" if scale == "bias" else "false"} }} }}\n')
    return text + f'layer {{ name: "relu" type: "ReLU" bottom: "{top}" top: "out" }}\n'


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def true_stats(layout, rng):
    """mean, var, gamma, beta (float64) a layout can hold; the clamp case gets variances of
    the size of eps."""
    mean = rng.normal(0, 1, OUTPUTS)
    if layout == "bvlc-factor-0":
        mean = np.zeros(OUTPUTS)
    var = rng.uniform(1e-6, 3e-5, OUTPUTS) if "clamp" in layout else \
        rng.uniform(0.2, 3, OUTPUTS)
    if layout == "bvlc-factor-0":
        var = np.zeros(OUTPUTS)
    affine = layout.startswith("nvcaffe-0.1")
    gamma = rng.uniform(-2, 2, OUTPUTS) if affine else np.ones(OUTPUTS)
    beta = rng.normal(0, 1, OUTPUTS) if affine else np.zeros(OUTPUTS)
    return mean, var, gamma, beta


def bn_blobs(layout, mean, var, gamma, beta):
    """The stored form of the statistics (blob arrays) for each layout."""
    if layout == "bvlc":
        f = 3.7
        return [mean * f, var * f, [f]]
    if layout == "bvlc-factor-0":
        return [mean, var, [0.0]]
    if layout == "nvcaffe-3-blobs":
        return [mean, var, [1.0]]
    if layout.startswith("nvcaffe-0.16"):
        return [mean, var, [1.0], gamma, beta]
    return [gamma, beta, mean, var, [1.0]]


def set_blobs(net, blobs):
    for name, arrays in blobs.items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = np.asarray(array).reshape(blob.shape)


def naive_conv(x, w, b, group):
    """3x3, pad 1, stride 1 grouped convolution in float64 (the test's own oracle)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    win = win.reshape(n, group, c // group, h, wd, 3, 3)
    wg = w.reshape(group, o // group, c // group, 3, 3)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg).reshape(n, o, h, wd)
    return y + b[None, :, None, None]


def random_case(layout, bias, inplace, group, scale, seed=0):
    """The float32 net with random weights and statistics, its blobs, x and the true stats."""
    rng = np.random.default_rng(seed)
    param = parse(net_text(layout, bias, inplace, group, scale))
    net = Net(param=param, phase=TEST)
    mean, var, gamma, beta = true_stats(layout, rng)
    blobs = {"conv": [rng.normal(0, 0.5, net.params["conv"][0].shape)]
             + ([rng.normal(0, 1, OUTPUTS)] if bias else []),
             "bn": bn_blobs(layout, mean, var, gamma, beta)}
    if scale:
        sg, sb = rng.uniform(-2, 2, OUTPUTS), rng.normal(0, 1, OUTPUTS)
        blobs["scale"] = [sg, sb] if scale == "bias" else [sg]
        gamma, beta = gamma * sg, beta * sg + (sb if scale == "bias" else 0)
    set_blobs(net, blobs)
    x = rng.normal(0, 1, (2, CHANNELS, 5, 5)).astype(F32)
    return param, net, x, (mean, var, gamma, beta)


def run(param, blobs, x, dtype=F32):
    net = Net(param=param, phase=TEST, dtype=dtype)
    set_blobs(net, blobs)
    return net, net.forward(data=np.asarray(x, dtype))["out"].copy()


def arrays_of(net):
    return {name: [blob.data for blob in blobs] for name, blobs in net.params.items()}


GRID = [pytest.param(layout, bias, inplace, group, id=f"{layout}-{'bias' if bias else 'nobias'}"
                     f"-{'inplace' if inplace else 'apart'}-g{group}")
        for layout in LAYOUTS for bias in (True, False) for inplace in (True, False)
        for group in (1, 2)]
SCALED = [pytest.param(layout, scale, inplace, id=f"{layout}-scale-{scale}-"
                                                  f"{'inplace' if inplace else 'apart'}")
          for layout in ("bvlc", "nvcaffe-3-blobs") for scale in ("bias", "no-bias")
          for inplace in (True, False)]


def check_fold(layout, bias, inplace, group, scale=None, remove=False):
    param, net, x, (mean, var, gamma, beta) = random_case(layout, bias, inplace, group, scale)
    layer = net.layer_dict["bn"]
    form = bn_fold.bn_test_form(param.layer[2])
    assert (layer.layout, layer.eps, layer.use_global_stats) == \
        (LAYOUTS[layout][1], form.eps, form.global_stats) and form.layout == layer.layout
    y32 = net.forward(data=x)["out"].copy()
    given = arrays_of(net)
    before = {name: [a.copy() for a in arrays] for name, arrays in given.items()}
    _, y64 = run(param, given, x, np.float64)

    result = bn_fold.fold_batch_norm(param, given, remove=remove)
    assert result.folds == [bn_fold.Fold("conv", "bn", "scale" if scale else None, remove)]
    assert result.left == []
    conv = next(lp for lp in result.param.layer if lp.name == "conv")
    assert conv.convolution_param.bias_term
    assert len(result.blobs["conv"]) == 2 and result.blobs["conv"][0].dtype == F32
    for name, arrays in before.items():                      # nothing given was changed
        for old, new in zip(arrays, given[name]):
            np.testing.assert_array_equal(old, new)
    _, y_fold = run(result.param, result.blobs, x)

    eps = LAYOUTS[layout][2]
    a = gamma / np.sqrt(var + eps)
    w = given["conv"][0].astype(np.float64)
    b = given["conv"][1].astype(np.float64) if bias else np.zeros(OUTPUTS)
    m = naive_conv(np.abs(x.astype(np.float64)), np.abs(w), np.abs(b), group)
    q = np.abs(a)[None, :, None, None] * (m + np.abs(mean)[None, :, None, None]) + \
        np.abs(beta)[None, :, None, None]
    k = CHANNELS // group * 9
    assert_f32_sum_close(y32, y64, q, k + 8)
    assert_f32_sum_close(y_fold, y64, q, k + 8)
    return result


@pytest.mark.parametrize("layout, bias, inplace, group", GRID)
def test_folded_net_gives_the_same_outputs(layout, bias, inplace, group):
    check_fold(layout, bias, inplace, group)


@pytest.mark.parametrize("layout, scale, inplace", SCALED)
def test_batch_norm_and_scale_fold_together(layout, scale, inplace):
    result = check_fold(layout, False, inplace, 1, scale)
    ones = result.blobs["scale"]
    np.testing.assert_array_equal(ones[0], np.ones(OUTPUTS, F32))
    if scale == "bias":
        np.testing.assert_array_equal(ones[1], np.zeros(OUTPUTS, F32))


@pytest.mark.parametrize("inplace", [True, False])
def test_remove_drops_the_layers_and_the_conv_writes_their_top(inplace):
    result = check_fold("bvlc", True, inplace, 2, "bias", remove=True)
    layers = {lp.name: lp for lp in result.param.layer}
    assert list(layers) == ["data", "conv", "relu"]
    assert list(layers["conv"].top) == ["conv" if inplace else "scaled"]
    assert list(layers["relu"].bottom) == list(layers["conv"].top)
    assert "bn" not in result.blobs and "scale" not in result.blobs


def test_hand_computed_fold():
    """W = 2, b = 1, mean 3, var 3, eps 1, gamma 4, beta 5: s = 4 / 2 = 2, W = 4,
    b = (1 - 3) * 2 + 5 = 1; the BVLC form stores mean and var times the factor 2."""
    for layout, arrays in (("nvcaffe-0.16", [[3], [3], [1], [4], [5]]),
                           ("nvcaffe-0.15", [[4], [5], [3], [3], [1]])):
        a, c = bn_fold.bn_affine(bn_fold.BnForm(layout, 1.0, True),
                                 [np.asarray(x, F32) for x in arrays])
        w, b = bn_fold.fold_into_conv(np.full((1, 1, 1, 1), 2, F32), np.ones(1, F32), a, c)
        assert (w.ravel().tolist(), b.tolist()) == ([4.0], [1.0])
    a, c = bn_fold.bn_affine(bn_fold.BnForm("bvlc", 1.0, True),
                             [np.asarray(x, F32) for x in ([6], [6], [2])])
    assert (a.tolist(), c.tolist()) == ([0.5], [-1.5])
    a, c = bn_fold.bn_affine(bn_fold.BnForm("bvlc", 0.25, True),      # factor 0: mean=var=0
                             [np.asarray(x, F32) for x in ([6], [6], [0])])
    assert (a.tolist(), c.tolist()) == ([2.0], [0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [1e-5, 1e-4, 1e-3, 0.1, 0.3, 0.5, 0.7, 1e-8, 3.0])
def test_identity_variance_makes_var_plus_eps_one(dtype, eps):
    t = np.dtype(dtype).type
    v = bn_fold.identity_variance(eps, dtype)
    assert v.dtype == dtype and v + t(eps) == 1


@pytest.mark.parametrize("layout", ["bvlc", "nvcaffe-0.16", "nvcaffe-0.15"])
def test_folded_batch_norm_is_an_exact_identity(layout):
    param, net, x, _ = random_case(layout, True, False, 1, None)
    result = bn_fold.fold_batch_norm(param, arrays_of(net))
    folded_net = Net(param=result.param, phase=TEST)
    set_blobs(folded_net, result.blobs)
    folded_net.forward(data=x)
    np.testing.assert_array_equal(folded_net.blobs["bn"].data, folded_net.blobs["conv"].data)


def left_of(text, blobs=None, **kw):
    param = parse(INPUT + text)
    if blobs is None:
        blobs = arrays_of(Net(param=param, phase=TEST))
    result = bn_fold.fold_batch_norm(param, blobs, **kw)
    return result, {left.bn: left.reason for left in result.left}


CONV = ('layer {{ name: "{0}" type: "Convolution" bottom: "{1}" top: "{0}" '
        'convolution_param {{ num_output: 4 kernel_size: 1 }} }}\n')
BN = 'layer {{ name: "{0}" type: "BatchNorm" bottom: "{1}" top: "{2}" {3}}}\n'


def test_batch_norm_without_a_lone_conv_before_it_is_left():
    text = (BN.format("bn_in", "data", "bn_in", "")
            + CONV.format("c1", "data") + CONV.format("c2", "data")
            + 'layer { name: "cat" type: "Concat" bottom: "c1" bottom: "c2" top: "cat" }\n'
            + BN.format("bn_cat", "cat", "bn_cat", "")
            + CONV.format("c3", "data") + BN.format("bn_c3", "c3", "bn_c3", "")
            + 'layer { name: "other" type: "ReLU" bottom: "c3" top: "r3" }\n'
            + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
              'inner_product_param { num_output: 4 } }\n'
            + BN.format("bn_ip", "ip", "bn_ip", "")
            + CONV.format("c4", "data")
            + BN.format("bn_batch", "c4", "bn_batch",
                        "batch_norm_param { use_global_stats: false } "))
    result, left = left_of(text)
    assert result.folds == []
    assert left == {
        "bn_in": "its bottom 'data' is a net input",
        "bn_cat": "it follows Concat 'cat' (only a Convolution is folded, as in caffe-jacinto)",
        "bn_c3": "the top 'c3' of Convolution 'c3' is read by other layers too",
        "bn_ip": "it follows InnerProduct 'ip' (only a Convolution is folded, as in "
                 "caffe-jacinto)",
        "bn_batch": "it normalises with the batch's statistics in TEST "
                    "(use_global_stats: false)"}
    assert [lp.name for lp in result.param.layer] == [lp.name for lp in parse(INPUT + text).layer]


def test_graph_not_list_order_decides():
    """bn1 reads c1 although c2 comes between them; an in-place ReLU on c1 before bn2 means
    bn2 follows the ReLU, not the conv."""
    text = (CONV.format("c1", "data") + CONV.format("c2", "data")
            + BN.format("bn1", "c1", "b1", "") + BN.format("bn_c2", "c2", "c2", "")
            + CONV.format("c3", "data")
            + 'layer { name: "r3" type: "ReLU" bottom: "c3" top: "c3" }\n'
            + BN.format("bn2", "c3", "c3", ""))
    result, left = left_of(text)
    assert [(f.conv, f.bn) for f in result.folds] == [("c1", "bn1"), ("c2", "bn_c2")]
    assert left == {"bn2": "it follows ReLU 'r3' (only a Convolution is folded, as in "
                           "caffe-jacinto)"}


def test_remove_keeps_the_output_name():
    text = CONV.format("c1", "data") + BN.format("bn1", "c1", "b1", "")
    result, _ = left_of(text, remove=True)
    assert result.folds == [bn_fold.Fold("c1", "bn1", None, True)]
    assert [(lp.name, list(lp.top)) for lp in result.param.layer] == [("data", ["data"]),
                                                                     ("c1", ["b1"])]


def test_shared_conv_parameters_are_left():
    text = ('layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" '
            'param { name: "w" } convolution_param { num_output: 4 kernel_size: 1 '
            'bias_term: false } }\n'
            'layer { name: "c2" type: "Convolution" bottom: "data" top: "c2" '
            'param { name: "w" } convolution_param { num_output: 4 kernel_size: 1 '
            'bias_term: false } }\n' + BN.format("bn1", "c1", "c1", ""))
    _, left = left_of(text)
    assert left == {"bn1": "Convolution 'c1' shares its parameters with another layer"}


def test_bad_blobs_are_errors_naming_the_layer():
    text = CONV.format("c1", "data") + BN.format("bn1", "c1", "c1", "")
    blobs = arrays_of(Net(param=parse(INPUT + text), phase=TEST))
    with pytest.raises(CaffeError, match=r"^layer 'bn1' \(BatchNorm\): 2 blobs for a "
                                         r"BatchNorm in the bvlc layout"):
        left_of(text, {**blobs, "bn1": blobs["bn1"][:2]})
    with pytest.raises(CaffeError, match=r"^layer 'bn1' \(BatchNorm\): no blobs given for "
                                         r"Convolution 'c1'$"):
        left_of(text, {"bn1": blobs["bn1"]})


# --- TI's JacintoNet11 deploy nets (and a MobileNet with BatchNorm + Scale) --------------
JACINTO = "jacinto-models/caffe-{}/trained/image_classification/{}/deploy.prototxt"
CORPUS_NETS = [
    ("0.15", "cifar10_jacintonet11v2/initial", "nvcaffe-0.15", None),
    ("0.16", "cifar10_jacintonet11v2/initial", "nvcaffe-0.16", None),
    ("0.17", "cifar10_jacintonet11v2/initial", "nvcaffe-0.16", None),
    ("0.17", "imagenet_mobilenet-0.5/backup/imagenet_mobilenet-0.5_bn+scale/initial", "bvlc",
     32),
]


@pytest.mark.parametrize("version, folder, layout, side", CORPUS_NETS,
                         ids=[f"{v}-{f.split('/')[0]}" for v, f, _, _ in CORPUS_NETS])
def test_corpus_deploy_nets_fold(version, folder, layout, side):
    path = CORPUS / JACINTO.format(version, folder)
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    param = read_net_param(str(path))
    if side:   # the ImageNet net at 32x32: global pooling keeps it valid, and it runs fast
        param.layer[0].input_param.shape[0].dim[2:] = [side, side]
    param.state.phase = TEST
    param = filter_net(param)
    net = Net(param=param, phase=TEST)
    rng = np.random.default_rng(1)
    for name, blobs in net.params.items():
        layer = net.layer_dict[name]
        if layer.type == "BatchNorm":
            assert layer.layout == layout
            count = blobs[0].count
            set_blobs(net, {name: bn_blobs(layout, rng.normal(0, 1, count),
                                           rng.uniform(0.2, 3, count),
                                           rng.uniform(0.5, 1.5, count),
                                           rng.normal(0, 1, count))})
        elif layer.type == "Scale":
            for blob in blobs:
                blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
    x = rng.uniform(0, 255, net.blobs["data"].shape).astype(F32)
    # the logits: the bottom of the final Softmax
    logits = param.layer[-1].bottom[0]
    net.forward(data=x)
    want = net.blobs[logits].data.astype(np.float64)

    result = bn_fold.fold_batch_norm(param, arrays_of(net))
    bns = [lp.name for lp in param.layer if lp.type == "BatchNorm"]
    assert [f.bn for f in result.folds] == bns and result.left == []
    assert all((f.scale is not None) == (layout == "bvlc") for f in result.folds)
    for removal in (False, True):
        if removal:
            result = bn_fold.fold_batch_norm(param, arrays_of(net), remove=True)
            assert not any(lp.type in ("BatchNorm", "Scale") for lp in result.param.layer)
        folded = Net(param=result.param, phase=TEST)
        set_blobs(folded, result.blobs)
        folded.forward(data=x)
        got = folded.blobs[logits].data
        # deep nets: the criterion, 1e-5 relative to the largest logit
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
