"""BatchNorm: BVLC semantics (statistics, running averages, global stats) and NVCaffe's forms."""
import numpy as np
import pytest

from gradcheck import check_gradient, check_gradient_exhaustive, layer_param, make_layer
from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from caffe_lite.layers.batch_norm import detect_layout


def stats_axes(x):
    return (0,) + tuple(range(2, x.ndim)) if x.ndim > 1 else (0,)


def batch_oracle(x, eps):
    axes = stats_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), mean.ravel(), var.ravel()


def expand(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim > 1 else v


def bn(extra="", params=""):
    return f'name: "bn" type: "BatchNorm" top: "y" {params} batch_norm_param {{ {extra} }}'


EPS32 = float(np.float32(1e-5))
SHAPES = [(4, 3, 5, 2), (6, 5), (3, 2, 4), (2, 3, 2, 2, 3), (7,)]


@pytest.mark.parametrize("shape", SHAPES)
def test_bvlc_train_forward_and_running_stats(shape):
    rng = np.random.default_rng(len(shape))
    x1, x2 = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    layer, bottom, top = make_layer(bn("moving_average_fraction: 0.9"), [x1])
    assert [b.shape for b in layer.blobs] == [(layer.channels,)] * 2 + [(1,)]
    assert layer.param_propagate_down == [False] * 3
    layer.forward(bottom, top)
    want, mean1, var1 = batch_oracle(x1, EPS32)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10, atol=1e-12)
    m = x1.size // layer.channels
    corr = m / (m - 1) if m > 1 else 1.0
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, mean1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.blobs[1].data, corr * var1, rtol=1e-12)
    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    _, mean2, var2 = batch_oracle(x2, EPS32)
    maf = float(np.float32(0.9))
    np.testing.assert_allclose(layer.blobs[2].data, [maf + 1])
    np.testing.assert_allclose(layer.blobs[0].data, maf * mean1 + mean2, rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(layer.blobs[1].data, maf * corr * var1 + corr * var2, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_bvlc_global_stats(shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    layer, bottom, top = make_layer(bn("eps: 0.001"), [x], phase=TEST)
    assert layer.use_global_stats
    c = layer.channels
    mean, var = rng.standard_normal(c), rng.random(c) + 0.5
    layer.blobs[0].data[...] = mean * 2.5
    layer.blobs[1].data[...] = var * 2.5
    layer.blobs[2].data[...] = 2.5
    before = [b.data.copy() for b in layer.blobs]
    layer.forward(bottom, top)
    eps = float(np.float32(0.001))
    want = (x - expand(mean, x)) / np.sqrt(expand(var, x) + eps)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10)
    for b, old in zip(layer.blobs, before):
        np.testing.assert_array_equal(b.data, old)   # statistics untouched
    # a zero factor gives zero statistics (Caffe: scale_factor = 0)
    layer.blobs[2].data[...] = 0
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(eps), rtol=1e-10)
    check_gradient(layer, bottom, top)


def test_use_global_stats_overrides_phase():
    x = np.random.default_rng(8).standard_normal((3, 2, 2, 2))
    layer, bottom, top = make_layer(bn("use_global_stats: false"), [x], phase=TEST)
    assert not layer.use_global_stats
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, batch_oracle(x, EPS32)[0], rtol=1e-10)
    layer, bottom, top = make_layer(bn("use_global_stats: true"), [x], phase=TRAIN)
    assert layer.use_global_stats


@pytest.mark.parametrize("shape", SHAPES)
def test_bvlc_gradient(shape):
    x = np.random.default_rng(9).standard_normal(shape)
    layer, bottom, top = make_layer(bn(), [x])
    check_gradient(layer, bottom, top, directions=2)


def test_bvlc_exhaustive_tiny():
    x = np.random.default_rng(10).standard_normal((3, 2, 2, 1))
    layer, bottom, top = make_layer(bn(), [x])
    check_gradient_exhaustive(layer, bottom, top)


def test_in_place_matches():
    x = np.random.default_rng(11).standard_normal((4, 3, 3, 2))
    dy = np.random.default_rng(12).standard_normal(x.shape)
    layer, bottom, top = make_layer(bn(), [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    param = layer_param(bn())
    inplace = create_layer(param, TRAIN, np.float64)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    inplace.setup([blob], [blob])
    inplace.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-13)
    blob.diff[...] = dy
    inplace.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-12, atol=1e-14)


def test_statistics_are_state_blobs_not_rewritten_specs():
    layer, _, _ = make_layer(bn(), [np.zeros((2, 3))])
    assert layer.state_blobs == {0, 1, 2}
    assert layer.param_propagate_down == [False, False, False]
    assert len(layer.param.param) == 0          # no lr_mult written into the layer's specs
    layer, _, _ = make_layer(bn(params="param { lr_mult: 0 }"), [np.zeros((2, 3))])
    assert [p.lr_mult for p in layer.param.param] == [0]
    # Caffe refuses a learning rate on the statistics (a spec's lr_mult defaults to 1)
    for params in ("param { lr_mult: 1 }", "param { lr_mult: 0 } param { decay_mult: 0 }"):
        with pytest.raises(CaffeError, match="statistics as layer parameters"):
            make_layer(bn(params=params), [np.zeros((2, 3))])


def test_net_never_updates_statistics_and_keeps_their_history_slot(tmp_path):
    """The statistics keep Caffe's place among the learnable params (so a .solverstate has
    a history blob for each, as Caffe's does), report lr_mult 0, and the solver leaves them
    to the layer even with weight decay on."""
    from caffe_lite.solvers import get_solver
    net_text = ('name: "bn" layer { name: "x" type: "DummyData" top: "x" top: "y" '
                'dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } '
                'data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } } } '
                'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "b" } '
                'layer { name: "ip" type: "InnerProduct" bottom: "b" top: "ip" '
                'inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } } '
                'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" '
                'top: "loss" }')
    (tmp_path / "net.prototxt").write_text(net_text)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 momentum: 0.9 weight_decay: 0.5 '
        'lr_policy: "fixed" max_iter: 3 display: 0 snapshot_after_train: false')
    solver = get_solver(str(tmp_path / "solver.prototxt"))
    net = solver.net
    assert net.learnable_is_state == [True, True, True, False, False]
    assert net.params_lr[:3] == [0.0, 0.0, 0.0]
    assert len(solver.history) == 5
    stats = [b.data.copy() for b in net.params["bn"]]
    solver.step(1)
    # one TRAIN pass: blob = maf * blob + batch statistic, factor = maf * factor + 1
    x = net.blobs["x"].data.reshape(4, 3)
    np.testing.assert_allclose(net.params["bn"][0].data, stats[0] * 0.999 + x.mean(0),
                               rtol=1e-5, atol=1e-6)
    assert net.params["bn"][2].data[0] == np.float32(stats[2][0] * 0.999 + 1)
    assert all(not np.any(h) for h in solver.history[:3])


def test_channel_mismatch_on_reshape():
    layer, bottom, top = make_layer(bn(), [np.zeros((2, 3, 2))])
    bottom[0].reshape((2, 4, 2))
    with pytest.raises(CaffeError, match="channels"):
        layer.forward(bottom, top)


# --- NVCaffe ------------------------------------------------------------------------------
NV16 = "moving_average_fraction: 0.8 eps: 0.0001 scale_bias: true"
NV15_PARAMS = ("param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 } "
               "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }")
NV15 = ('moving_average_fraction: 0.8 eps: 0.0001 scale_filler { type: "constant" value: 1 } '
        'bias_filler { type: "constant" value: 0 }')


def test_layout_detection():
    assert detect_layout(layer_param(bn())) == "bvlc"
    assert detect_layout(layer_param(bn(NV16))) == "nvcaffe-0.16"
    assert detect_layout(layer_param(bn(NV15, NV15_PARAMS))) == "nvcaffe-0.15"
    assert detect_layout(layer_param(bn(NV15))) == "nvcaffe-0.15"
    stats_first = "param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }"
    assert detect_layout(layer_param(bn(NV15, stats_first))) == "nvcaffe-0.16"
    blobs = "".join(f"blobs {{ shape {{ dim: {d} }} }}" for d in (4, 4, 1, 4, 4))
    assert detect_layout(layer_param(bn(NV15, NV15_PARAMS) + blobs)) == "nvcaffe-0.16"
    blobs = "".join(f"blobs {{ shape {{ dim: {d} }} }}" for d in (4, 4, 4, 4, 1))
    assert detect_layout(layer_param(bn(NV15) + blobs)) == "nvcaffe-0.15"


def test_nvcaffe_016_scale_bias():
    rng = np.random.default_rng(13)
    x1, x2, x3 = (rng.standard_normal((4, 3, 2, 3)) for _ in range(3))
    layer, bottom, top = make_layer(bn(NV16), [x1])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,), (3,), (3,)]
    assert layer.param_propagate_down == [False, False, False, True, True]
    assert layer.state_blobs == {0, 1, 2}
    # NVCaffe forces the scale and bias multipliers; the statistics' specs are left alone
    assert [(p.lr_mult, p.decay_mult) for p in layer.param.param][3:] == [(1, 1)] * 2
    np.testing.assert_array_equal(layer.blobs[2].data, [1])
    np.testing.assert_array_equal(layer.blobs[3].data, 1)
    np.testing.assert_array_equal(layer.blobs[4].data, 0)
    scale, bias = rng.standard_normal(3), rng.standard_normal(3)
    layer.blobs[3].data[...] = scale
    layer.blobs[4].data[...] = bias
    eps = float(np.float32(1e-4))
    maf = float(np.float32(0.8))
    means, vars_ = [], []
    for x in (x1, x2, x3):
        bottom[0].data[...] = x
        layer.forward(bottom, top)
        xn, m, v = batch_oracle(x, eps)
        np.testing.assert_allclose(top[0].data, xn * expand(scale, x) + expand(bias, x),
                                   rtol=1e-10, atol=1e-12)
        means.append(m)
        vars_.append(v)
    # first two TRAIN passes copy the batch statistics, the third blends them
    np.testing.assert_allclose(layer.blobs[0].data, maf * means[1] + (1 - maf) * means[2],
                               rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].data, maf * vars_[1] + (1 - maf) * vars_[2],
                               rtol=1e-10)
    check_gradient(layer, bottom, top, directions=2)


def test_nvcaffe_016_test_phase_and_eps_floor():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 2, 2))
    layer, bottom, top = make_layer(bn("eps: 1e-9 use_global_stats: false scale_bias: true"),
                                    [x], phase=TEST)
    assert layer.use_global_stats          # the phase decides in NVCaffe 0.16/0.17
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    layer.blobs[0].data[...] = mean
    layer.blobs[1].data[...] = var
    layer.blobs[2].data[...] = 7           # never read
    layer.forward(bottom, top)
    want = (x - expand(mean, x)) / np.sqrt(expand(var, x) + EPS32)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10)


def test_nvcaffe_015_layout_and_updates():
    rng = np.random.default_rng(15)
    x1, x2 = rng.standard_normal((3, 2, 3, 2)), rng.standard_normal((3, 2, 3, 2))
    layer, bottom, top = make_layer(bn(NV15, NV15_PARAMS), [x1])
    assert layer.layout == "nvcaffe-0.15"
    assert [b.shape for b in layer.blobs] == [(2,), (2,), (2,), (2,), (1,)]
    assert layer.param_propagate_down == [True, True, False, False, False]
    assert [p.lr_mult for p in layer.param.param] == [1, 1, 0, 0]   # left as written
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    eps, maf = float(np.float32(1e-4)), float(np.float32(0.8))
    layer.forward(bottom, top)
    xn, m1, v1 = batch_oracle(x1, eps)
    np.testing.assert_allclose(top[0].data, xn, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, m1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.blobs[3].data, v1, rtol=1e-12)
    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    _, m2, v2 = batch_oracle(x2, eps)
    np.testing.assert_allclose(layer.blobs[2].data, maf * m1 + (1 - maf) * m2, rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[3].data, maf * v1 + (1 - maf) * v2, rtol=1e-10)
    check_gradient(layer, bottom, top, directions=2)


def test_nvcaffe_015_variance_clip():
    x = np.random.default_rng(16).standard_normal((4, 2, 2, 2)) * np.array([10, 0.01])[:, None,
                                                                                       None]
    layer, bottom, top = make_layer(bn(NV15), [x])
    stored = np.array([1.0, 1.0])
    layer.blobs[3].data[...] = stored
    layer.iter = 200
    layer.forward(bottom, top)
    # batch variances (about 100 and 1e-4) clipped to [0.25, 4 * (1 + 1)] before the update
    maf = float(np.float32(0.8))
    np.testing.assert_allclose(layer.blobs[3].data, maf * stored + (1 - maf) * np.array([8, 0.25]),
                               rtol=1e-10)


def test_backward_ignores_propagate_down_as_caffe():
    x = np.random.default_rng(17).standard_normal((3, 2, 2))
    layer, bottom, top = make_layer(bn(), [x])
    layer.forward(bottom, top)
    top[0].diff[...] = np.random.default_rng(18).standard_normal(x.shape)
    layer.backward(top, [False], bottom)
    assert np.abs(bottom[0].diff).sum() > 0
