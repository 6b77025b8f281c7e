"""Gradient checking as Caffe's GradientChecker does it, plus layer-building helpers.

Objective: L = sum_t sum(top_t * R_t) with fixed random R_t, so dL/dtop_t = R_t. The
analytic gradient comes from the layer's backward with top diffs set to R_t; the numeric one
from central differences. `check_gradient` checks one random direction per input (fast,
float64); `check_gradient_exhaustive` checks every element (tiny shapes only).
Comparison: |a - n| <= threshold * max(|a|, |n|, 1), Caffe's scale with a floor of 1.
"""
import numpy as np
from google.protobuf import text_format

from caffe_lite.blob import Blob
from caffe_lite.common import TRAIN
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2


def layer_param(text):
    param = caffe_pb2.LayerParameter()
    text_format.Parse(text, param)
    return param


def make_layer(text, bottoms, phase=TRAIN, dtype=np.float64, ntop=None):
    """Build a layer from LayerParameter text, set it up on `bottoms` (arrays).

    Returns (layer, bottom_blobs, top_blobs). `ntop` defaults to the number of `top:` fields.
    """
    param = layer_param(text)
    layer = create_layer(param, phase, dtype)
    bottom = []
    for arr in bottoms:
        b = Blob(np.shape(arr), dtype)
        b.data[...] = arr
        bottom.append(b)
    n = len(param.top) if ntop is None else ntop
    top = [Blob((), dtype) for _ in range(n)]
    layer.setup(bottom, top)
    return layer, bottom, top


def _objective(layer, bottom, top, weights, before_forward=None):
    if before_forward:
        before_forward()
    layer.forward(bottom, top)
    return sum(float(np.sum(t.data * w)) for t, w in zip(top, weights))


def _analytic(layer, bottom, top, weights, check_bottom, before_forward=None):
    if before_forward:
        before_forward()
    layer.forward(bottom, top)
    for t, w in zip(top, weights):
        t.diff[...] = w
    for b in bottom:
        b.diff[...] = 0
    for p in layer.blobs:
        p.diff[...] = 0
    prop = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, prop, bottom)
    return ([bottom[i].diff.copy() for i in check_bottom],
            [p.diff.copy() for p in layer.blobs])


def _inputs(layer, bottom, check_bottom, check_params):
    items = [(f"bottom[{i}]", bottom[i]) for i in check_bottom]
    if check_params:
        items += [(f"param[{j}]", p) for j, p in enumerate(layer.blobs)
                  if j in check_params]
    return items


def _resolve(layer, bottom, check_bottom, check_params):
    if check_bottom is None:
        check_bottom = list(range(len(bottom)))
    if check_params is True:
        check_params = [j for j in range(len(layer.blobs))
                        if j >= len(layer.param_propagate_down) or layer.param_propagate_down[j]]
    elif not check_params:
        check_params = []
    return list(check_bottom), list(check_params)


def check_gradient(layer, bottom, top, check_bottom=None, check_params=True, eps=1e-6,
                   threshold=1e-4, seed=0, before_forward=None, directions=1):
    """Directional central-difference check; raises AssertionError with the details."""
    rng = np.random.default_rng(seed)
    check_bottom, check_params = _resolve(layer, bottom, check_bottom, check_params)
    layer.forward(bottom, top)
    weights = [rng.standard_normal(t.shape) for t in top]
    gb, gp = _analytic(layer, bottom, top, weights, check_bottom, before_forward)
    grads = gb + [gp[j] for j in check_params]
    for name_blob, grad in zip(_inputs(layer, bottom, check_bottom, check_params), grads):
        name, blob = name_blob
        for _ in range(directions):
            v = rng.standard_normal(blob.shape)
            base = blob.data.copy()
            blob.data[...] = base + eps * v
            lp = _objective(layer, bottom, top, weights, before_forward)
            blob.data[...] = base - eps * v
            lm = _objective(layer, bottom, top, weights, before_forward)
            blob.data[...] = base
            numeric = (lp - lm) / (2 * eps)
            analytic = float(np.sum(grad * v))
            scale = max(abs(analytic), abs(numeric), 1.0)
            assert abs(analytic - numeric) <= threshold * scale, (
                f"{layer.type} {name}: analytic {analytic!r} vs numeric {numeric!r}")


def check_gradient_exhaustive(layer, bottom, top, check_bottom=None, check_params=True,
                              eps=1e-6, threshold=1e-4, seed=0, before_forward=None):
    """Per-element central-difference check (keep shapes tiny)."""
    rng = np.random.default_rng(seed)
    check_bottom, check_params = _resolve(layer, bottom, check_bottom, check_params)
    layer.forward(bottom, top)
    weights = [rng.standard_normal(t.shape) for t in top]
    gb, gp = _analytic(layer, bottom, top, weights, check_bottom, before_forward)
    grads = gb + [gp[j] for j in check_params]
    for (name, blob), grad in zip(_inputs(layer, bottom, check_bottom, check_params), grads):
        flat = blob.data.reshape(-1)
        for k in range(flat.size):
            saved = flat[k]
            flat[k] = saved + eps
            lp = _objective(layer, bottom, top, weights, before_forward)
            flat[k] = saved - eps
            lm = _objective(layer, bottom, top, weights, before_forward)
            flat[k] = saved
            numeric = (lp - lm) / (2 * eps)
            analytic = float(grad.reshape(-1)[k])
            scale = max(abs(analytic), abs(numeric), 1.0)
            assert abs(analytic - numeric) <= threshold * scale, (
                f"{layer.type} {name}[{k}]: analytic {analytic!r} vs numeric {numeric!r}")


def f32_magnitudes(text, x, dy, build):
    """Forward and backward of the float64 layer on |x|, |params| and |dy|: for a linear
    layer (convolution, inner product) each output is then the sum of the absolute terms
    that the float32 layer adds up, which bounds its rounding error."""
    layer, bottom, top = build(text, np.abs(x), np.float64)
    for blob in layer.blobs:
        blob.data[...] = np.abs(blob.data)
    layer.forward(bottom, top)
    top[0].diff[...] = np.abs(dy)
    layer.backward(top, [True], bottom)
    return top[0].data, bottom[0].diff, [blob.diff for blob in layer.blobs]


def assert_f32_sum_close(got, want, magnitude, terms):
    """A float32 sum of `terms` products against its float64 value: each partial sum rounds
    once and every operand was rounded to float32 once, so the error is at most
    (terms + 2) * eps32 * (the sum of the absolute terms), whatever the summation order."""
    eps = float(np.finfo(np.float32).eps)
    err = np.abs(np.asarray(got, np.float64) - want)
    bound = (terms + 2) * eps * magnitude
    assert (err <= bound).all(), f"max excess {(err - bound).max():.3g}"
