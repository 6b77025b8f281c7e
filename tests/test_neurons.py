"""Neuron layers: ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold.

Forward against naive float64 NumPy oracles, gradients by central differences (inputs kept
away from kinks), in-place runs equal to out-of-place ones, and float32 parity with the
golden blobs from BVLC Caffe (bit for bit).
"""
import numpy as np
import pytest

from caffe_lite.blob import Blob
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from gradcheck import check_gradient, check_gradient_exhaustive, layer_param, make_layer

SHAPE = (2, 3, 4, 5)


def away_from_zero(shape, seed=0, lo=0.1, hi=2.0):
    """Random values with |x| in [lo, hi]: no kink inside a finite-difference step."""
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def positive(shape, seed=0, lo=0.2, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def text(type_, params=""):
    return f'name: "n" type: "{type_}" bottom: "x" top: "y" {params}'


def run(type_, params, x):
    layer, bottom, top = make_layer(text(type_, params), [x])
    layer.forward(bottom, top)
    return top[0].data.copy()


def f32(v):
    """A proto float field's value (the schema stores float32)."""
    return float(np.float32(v))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def power_oracle(x, power, scale, shift):
    power, scale, shift = f32(power), f32(scale), f32(shift)
    return (shift + scale * x) ** power


def exp_oracle(x, base, scale, shift):
    base, scale, shift = f32(base), f32(scale), f32(shift)
    b = np.e if base == -1 else base
    return b ** (shift + scale * x)


def log_oracle(x, base, scale, shift):
    base, scale, shift = f32(base), f32(scale), f32(shift)
    v = np.log(shift + scale * x)
    return v if base == -1 else v / np.log(base)


# --- (type, params, input maker, oracle) for every parameter setting under test -------------
CASES = [
    ("ReLU", "", away_from_zero, lambda x: np.maximum(x, 0)),
    ("ReLU", "relu_param { negative_slope: 0.1 }", away_from_zero,
     lambda x: np.where(x > 0, x, f32(0.1) * x)),
    ("ReLU", "relu_param { negative_slope: -0.5 }", away_from_zero,
     lambda x: np.where(x > 0, x, f32(-0.5) * x)),
    ("ELU", "", away_from_zero, lambda x: np.where(x > 0, x, np.expm1(x))),
    ("ELU", "elu_param { alpha: 0.3 }", away_from_zero,
     lambda x: np.where(x > 0, x, f32(0.3) * np.expm1(x))),
    ("ELU", "elu_param { alpha: 2.5 }", away_from_zero,
     lambda x: np.where(x > 0, x, f32(2.5) * np.expm1(x))),
    ("Sigmoid", "", away_from_zero, sigmoid),
    ("TanH", "", away_from_zero, np.tanh),
    ("AbsVal", "", away_from_zero, np.abs),
    ("BNLL", "", lambda s, seed=0: away_from_zero(s, seed, 0.1, 60.0),
     lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)),
    ("PReLU", "", away_from_zero, lambda x: np.where(x > 0, x, f32(0.25) * x)),
    ("PReLU", "prelu_param { channel_shared: true filler { type: 'constant' value: -0.7 } }",
     away_from_zero, lambda x: np.where(x > 0, x, f32(-0.7) * x)),
]
for p, sc, sh in [(2.0, 1.0, 0.0), (2.0, 0.5, 0.3), (3.0, 1.0, 0.0), (0.5, 1.0, 0.0),
                  (1.5, 0.8, 0.1), (1.0, 0.7, -0.2), (-1.0, 1.0, 0.5), (2.5, -0.4, 1.2),
                  (0.0, 1.0, 0.0), (1.5, 0.0, 0.4), (0.0, 0.0, 0.0)]:
    CASES.append(("Power", f"power_param {{ power: {p} scale: {sc} shift: {sh} }}",
                  positive, lambda x, p=p, sc=sc, sh=sh: power_oracle(x, p, sc, sh)))
for b, sc, sh in [(-1, 1.0, 0.0), (-1, 0.5, 0.1), (2.0, 1.0, 0.0), (0.5, -1.5, 0.4),
                  (10.0, 0.3, -1.0), (1.0, 2.0, 3.0)]:
    CASES.append(("Exp", f"exp_param {{ base: {b} scale: {sc} shift: {sh} }}",
                  away_from_zero, lambda x, b=b, sc=sc, sh=sh: exp_oracle(x, b, sc, sh)))
for b, sc, sh in [(-1, 1.0, 0.0), (-1, 0.5, 0.3), (2.0, 1.0, 0.0), (10.0, 2.0, 1.0),
                  (0.5, 1.5, 0.0)]:
    CASES.append(("Log", f"log_param {{ base: {b} scale: {sc} shift: {sh} }}",
                  positive, lambda x, b=b, sc=sc, sh=sh: log_oracle(x, b, sc, sh)))
IDS = [f"{t}[{p}]" if p else t for t, p, _, _ in CASES]


@pytest.mark.parametrize("type_,params,make,oracle", CASES, ids=IDS)
def test_forward_matches_oracle(type_, params, make, oracle):
    x = make(SHAPE)
    np.testing.assert_allclose(run(type_, params, x), oracle(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("type_,params,make,oracle", CASES, ids=IDS)
def test_gradient(type_, params, make, oracle):
    layer, bottom, top = make_layer(text(type_, params), [make(SHAPE, seed=1)])
    check_gradient(layer, bottom, top, directions=2)


@pytest.mark.parametrize("type_,params,make", [
    ("ReLU", "relu_param { negative_slope: 0.2 }", away_from_zero),
    ("PReLU", "prelu_param { filler { type: 'uniform' min: 0.1 max: 0.6 } }", away_from_zero),
    ("ELU", "elu_param { alpha: 0.5 }", away_from_zero),
    ("Sigmoid", "", away_from_zero),
    ("TanH", "", away_from_zero),
    ("AbsVal", "", away_from_zero),
    ("BNLL", "", away_from_zero),
    ("Power", "power_param { power: 1.5 scale: 0.8 shift: 0.1 }", positive),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", away_from_zero),
    ("Log", "log_param { base: 10 scale: 2 shift: 0.5 }", positive),
])
def test_gradient_exhaustive(type_, params, make):
    layer, bottom, top = make_layer(text(type_, params), [make((2, 3, 2), seed=2)])
    check_gradient_exhaustive(layer, bottom, top)


# --- in place -----------------------------------------------------------------------------------
def _pass(type_, params, x, dy, in_place):
    param = layer_param(text(type_, params))
    layer = create_layer(param, 0, np.float64)
    b = Blob(x.shape, np.float64)
    b.data[...] = x
    t = b if in_place else Blob((), np.float64)
    layer.setup([b], [t])
    layer.forward([b], [t])
    y = t.data.copy()
    t.diff[...] = dy
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward([t], [True], [b])
    return y, b.diff.copy(), [p.diff.copy() for p in layer.blobs]


INPLACE = [c for c in CASES if c[0] != "Threshold"]


@pytest.mark.parametrize("type_,params,make,oracle", INPLACE, ids=IDS)
def test_in_place_equals_out_of_place(type_, params, make, oracle):
    x = make(SHAPE, seed=3)
    dy = np.random.default_rng(4).standard_normal(SHAPE)
    y0, dx0, dp0 = _pass(type_, params, x, dy, in_place=False)
    y1, dx1, dp1 = _pass(type_, params, x, dy, in_place=True)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(dx1, dx0)
    for a, b in zip(dp1, dp0):
        np.testing.assert_array_equal(a, b)


def test_threshold_in_place_forward():
    x = away_from_zero(SHAPE)
    layer, bottom, top = make_layer(text("Threshold", "threshold_param { threshold: 0.5 }"),
                                    [x])
    layer.setup(bottom, bottom)
    layer.forward(bottom, bottom)
    np.testing.assert_array_equal(bottom[0].data, (x > 0.5).astype(float))


# --- layer specifics ----------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.0, 0.5, -1.0])
def test_threshold(threshold):
    x = away_from_zero(SHAPE)
    y = run("Threshold", f"threshold_param {{ threshold: {threshold} }}", x)
    np.testing.assert_array_equal(y, (x > threshold).astype(float))


def test_threshold_has_no_backward():
    layer, bottom, top = make_layer(text("Threshold"), [away_from_zero(SHAPE)])
    layer.forward(bottom, top)
    layer.backward(top, [False], bottom)
    with pytest.raises(CaffeError, match="no backward"):
        layer.backward(top, [True], bottom)


def test_relu_gates_on_sign_at_zero():
    # Caffe: dx = dy * ((x > 0) + slope * (x <= 0)), so x == 0 takes the slope
    x = np.array([[-1.0, 0.0, 2.0]])
    layer, bottom, top = make_layer(text("ReLU", "relu_param { negative_slope: 0.25 }"), [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0.25, 0.25, 1.0]])


def test_absval_sign_of_zero():
    x = np.array([[-3.0, 0.0, 2.0]])
    layer, bottom, top = make_layer(text("AbsVal"), [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 5
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[-5.0, 0.0, 5.0]])


def test_prelu_blobs_and_default_filler():
    x = away_from_zero((2, 4, 3))
    layer, bottom, top = make_layer(text("PReLU"), [x])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (4,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.25)
    shared, _, _ = make_layer(text("PReLU", "prelu_param { channel_shared: true }"), [x])
    assert shared.blobs[0].shape == () and shared.blobs[0].count == 1


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_per_channel_slopes_and_accumulation(shared):
    x = away_from_zero((3, 4, 2, 2), seed=5)
    params = f"prelu_param {{ channel_shared: {str(shared).lower()} }}"
    layer, bottom, top = make_layer(text("PReLU", params), [x])
    slopes = np.array(0.3) if shared else np.array([0.1, -0.2, 0.5, 1.5])
    layer.blobs[0].data[...] = slopes
    layer.forward(bottom, top)
    a = slopes if shared else slopes[None, :, None, None]
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, a * x), rtol=1e-14)
    dy = np.random.default_rng(6).standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)
    axes = (0, 1, 2, 3) if shared else (0, 2, 3)
    expected = np.sum(dy * x * (x <= 0), axis=axes)
    np.testing.assert_allclose(layer.blobs[0].diff, expected, rtol=1e-12)
    layer.backward(top, [True], bottom)     # parameter gradients accumulate
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * expected, rtol=1e-12)


def test_prelu_two_axes_and_param_only_backward():
    x = away_from_zero((5, 3), seed=7)
    layer, bottom, top = make_layer(text("PReLU"), [x])
    check_gradient(layer, bottom, top)
    layer.forward(bottom, top)
    bottom[0].diff[...] = 7
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7)   # untouched without propagate_down


def test_prelu_needs_two_axes():
    with pytest.raises(CaffeError, match="axes"):
        make_layer(text("PReLU"), [np.ones(4)])


@pytest.mark.parametrize("p,sc,sh,expect_dx", [
    (0.0, 2.0, 0.5, 0.0),      # power 0: y = 1, no gradient
    (3.0, 0.0, 0.5, 0.0),      # scale 0: y = shift^power, no gradient
    (1.0, -0.5, 2.0, -0.5),    # power 1: constant gradient power * scale
])
def test_power_constant_cases(p, sc, sh, expect_dx):
    x = positive(SHAPE)
    layer, bottom, top = make_layer(
        text("Power", f"power_param {{ power: {p} scale: {sc} shift: {sh} }}"), [x])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, power_oracle(x, p, sc, sh), rtol=1e-14)
    top[0].diff[...] = 3
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 3 * expect_dx if p == 1 else expect_dx)


@pytest.mark.parametrize("type_,params", [
    ("Exp", "exp_param { base: 0 }"), ("Exp", "exp_param { base: -2 }"),
    ("Log", "log_param { base: 0 }"), ("Log", "log_param { base: 1 }"),
])
def test_bad_base(type_, params):
    with pytest.raises(CaffeError, match="base"):
        make_layer(text(type_, params), [positive(SHAPE)])


def test_bnll_extremes_are_finite():
    x = np.array([[-800.0, -60.0, 0.0, 60.0, 800.0]])
    layer, bottom, top = make_layer(text("BNLL"), [x])
    layer.forward(bottom, top)
    # Caffe's log(1. + exp(x)) rounds 1 + e^-60 to 1 in double: the tiny tail is lost
    np.testing.assert_allclose(top[0].data, [[0.0, 0.0, np.log(2), 60.0, 800.0]],
                               rtol=1e-12, atol=1e-20)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    assert np.all(np.isfinite(bottom[0].diff))
    np.testing.assert_allclose(bottom[0].diff[0, 2:], [0.5, 1.0, 1.0])


@pytest.mark.parametrize("type_", ["ReLU", "Sigmoid", "TanH", "ELU", "BNLL", "AbsVal"])
def test_float32_close_to_float64(type_):
    x = away_from_zero(SHAPE, seed=8)
    l64, b64, t64 = make_layer(text(type_), [x])
    l32, b32, t32 = make_layer(text(type_), [x], dtype=np.float32)
    for layer, b, t in ((l64, b64, t64), (l32, b32, t32)):
        layer.forward(b, t)
        t[0].diff[...] = 1
        layer.backward(t, [True], b)
    assert t32[0].data.dtype == np.float32 and b32[0].diff.dtype == np.float32
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b32[0].diff, b64[0].diff, rtol=1e-6, atol=1e-7)


def test_reshape_follows_bottom():
    layer, bottom, top = make_layer(text("TanH"), [np.zeros((2, 3))])
    bottom[0].reshape(4, 5)
    bottom[0].data[...] = 0.5
    layer.forward(bottom, top)
    assert top[0].shape == (4, 5)
    np.testing.assert_allclose(top[0].data, np.tanh(0.5))


# --- golden parity with BVLC Caffe (float32, layers_b) -------------------------------------------
GOLDEN = [
    # layer text, bottom blob, top blob, diff of the bottom (None: no diff check)
    ("Sigmoid", "", "prod", "sig", "prod"),
    ("TanH", "", "bn1", "tanh", "bn1_scale1_0_split_2"),
    ("PReLU", "prelu_param { filler { type: 'constant' value: 0.3 } }", "max", "prelu", "max"),
    ("ELU", "elu_param { alpha: 0.7 }", "prelu", "elu", "prelu"),
    ("AbsVal", "", "elu", "abs", "elu"),
    ("Power", "power_param { power: 1.5 scale: 0.8 shift: 0.1 }", "abs", "pow", "abs"),
    ("BNLL", "", "s1", "bnll", "s1"),
    ("Exp", "exp_param { base: -1 scale: 0.5 shift: 0.1 }", "s2", "exp", "s2"),
]


@pytest.mark.parametrize("type_,params,src,dst,src_diff", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_parity(shared, type_, params, src, dst, src_diff):
    g = np.load(shared / "golden" / "layers_b" / "golden.npz")
    layer, bottom, top = make_layer(text(type_, params), [g[f"train/blob/{src}"]],
                                    dtype=np.float32)
    if type_ == "PReLU":
        layer.blobs[0].data[...] = g["train/param/prelu/0"]
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, g[f"train/blob/{dst}"])
    top[0].diff[...] = g[f"train/diff/{dst}"]
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, g[f"train/diff/{src_diff}"])
    if type_ == "PReLU":
        np.testing.assert_array_equal(layer.blobs[0].diff, g["train/pdiff/prelu/0"])


def test_threaded_chunks_give_the_same_bits(monkeypatch):
    from caffe_lite import threads
    from caffe_lite.kernels import neuron as K
    x = away_from_zero((3, 50, 7), seed=9).astype(np.float32)
    results = []
    for limit in (1 << 30, 16):
        monkeypatch.setattr(K, "PARALLEL_MIN", limit)
        monkeypatch.setattr(threads, "get_num_threads", lambda: 3)
        layer, bottom, top = make_layer(text("ELU", "elu_param { alpha: 0.7 }"), [x],
                                        dtype=np.float32)
        layer.forward(bottom, top)
        top[0].diff[...] = 0.5
        layer.backward(top, [True], bottom)
        results.append((top[0].data.copy(), bottom[0].diff.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
