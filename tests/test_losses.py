"""Loss layers: EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, InfogainLoss,
ContrastiveLoss.

Forward against naive float64 NumPy oracles, gradients by central differences (the loss
weight is the random top diff there, so scaling by it is checked too), normalization modes,
ignore_label, and float32 parity with the golden blobs from BVLC Caffe.
"""
import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.io.binary import write_binary
from caffe_lite.io.blobs import array_to_blob_proto
from gradcheck import check_gradient, check_gradient_exhaustive, make_layer

rng = np.random.default_rng


def loss_text(type_, bottoms, params="", tops=("loss",)):
    b = " ".join(f'bottom: "{n}"' for n in bottoms)
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'name: "l" type: "{type_}" {b} {t} {params}'


def forward(text, arrays, **kw):
    layer, bottom, top = make_layer(text, arrays, **kw)
    loss = layer.forward(bottom, top)
    return layer, bottom, top, loss


def backward(layer, bottom, top, prop, weight=1.0):
    top[0].diff[...] = weight
    for b in bottom:
        b.diff[...] = 0
    layer.backward(top, prop, bottom)
    return [b.diff.copy() for b in bottom]


# --- EuclideanLoss ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (1, 7)])
def test_euclidean_forward_backward(shape):
    a, b = rng(0).standard_normal(shape), rng(1).standard_normal(shape)
    text = loss_text("EuclideanLoss", ["a", "b"])
    layer, bottom, top, loss = forward(text, [a, b])
    expected = np.sum((a - b) ** 2) / shape[0] / 2
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12)
    assert loss == pytest.approx(expected)
    da, db = backward(layer, bottom, top, [True, True], weight=3.0)
    np.testing.assert_allclose(da, 3.0 * (a - b) / shape[0], rtol=1e-12)
    np.testing.assert_allclose(db, -3.0 * (a - b) / shape[0], rtol=1e-12)
    assert layer.allow_force_backward(1)


def test_euclidean_gradients():
    a, b = rng(2).standard_normal((3, 4, 2)), rng(3).standard_normal((3, 8))
    layer, bottom, top = make_layer(loss_text("EuclideanLoss", ["a", "b"]), [a, b])
    check_gradient(layer, bottom, top, directions=2)
    small, sb, st = make_layer(loss_text("EuclideanLoss", ["a", "b"]),
                               [a[:2, :2, :1], b[:2, :2]])
    check_gradient_exhaustive(small, sb, st)


def test_euclidean_loss_weight():
    a, b = rng(4).standard_normal((2, 3)), rng(5).standard_normal((2, 3))
    text = loss_text("EuclideanLoss", ["a", "b"], "loss_weight: 2.5")
    layer, bottom, top, loss = forward(text, [a, b])
    assert loss == pytest.approx(2.5 * np.sum((a - b) ** 2) / 4)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2.5 * (a - b) / 2, rtol=1e-12)


def test_euclidean_count_mismatch():
    with pytest.raises(CaffeError, match="count"):
        make_layer(loss_text("EuclideanLoss", ["a", "b"]), [np.ones((2, 3)), np.ones((2, 4))])


# --- SigmoidCrossEntropyLoss -----------------------------------------------------------------
def sce_oracle(x, t, ignore=None):
    p = 1 / (1 + np.exp(-x))
    per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    valid = np.ones(x.shape, bool) if ignore is None else t.astype(int) != ignore
    return np.sum(per * valid), int(valid.sum()), (p - t) * valid


SCE_NORMS = [
    ("", "batch"),
    ("loss_param { normalize: true }", "valid"),
    ("loss_param { normalize: false }", "batch"),
    ("loss_param { normalization: FULL }", "full"),
    ("loss_param { normalization: VALID }", "valid"),
    ("loss_param { normalization: BATCH_SIZE }", "batch"),
    ("loss_param { normalization: NONE }", "none"),
    ("loss_param { normalization: BATCH_SIZE normalize: true }", "batch"),
]


def expected_norm(kind, outer, inner, valid):
    n = {"full": outer * inner, "valid": valid, "batch": outer, "none": 1}[kind]
    return max(1.0, n)


@pytest.mark.parametrize("ignore", [None, -1])
@pytest.mark.parametrize("params,kind", SCE_NORMS)
def test_sigmoid_cross_entropy_normalization(params, kind, ignore):
    shape = (3, 2, 4)
    x = rng(6).standard_normal(shape) * 3
    t = rng(7).uniform(0, 1, shape)
    if ignore is not None:
        t[rng(8).uniform(size=shape) < 0.3] = ignore
        params = params.replace("loss_param {", f"loss_param {{ ignore_label: {ignore}") \
            if params else f"loss_param {{ ignore_label: {ignore} }}"
    layer, bottom, top, _ = forward(loss_text("SigmoidCrossEntropyLoss", ["x", "t"], params),
                                    [x, t])
    total, valid, grad = sce_oracle(x, t, ignore)
    norm = expected_norm(kind, shape[0], 8, valid)
    np.testing.assert_allclose(top[0].data, total / norm, rtol=1e-12)
    (dx, dt) = backward(layer, bottom, top, [True, False], weight=0.7)
    np.testing.assert_allclose(dx, 0.7 * grad / norm, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(dt, 0)


def test_sigmoid_cross_entropy_stable_for_large_inputs():
    x = np.array([[-500.0, -40.0, 40.0, 500.0]])
    t = np.array([[0.0, 1.0, 0.0, 1.0]])
    layer, bottom, top, _ = forward(loss_text("SigmoidCrossEntropyLoss", ["x", "t"]), [x, t])
    np.testing.assert_allclose(top[0].data, 80.0, rtol=1e-12)


def test_sigmoid_cross_entropy_all_ignored_is_zero():
    x, t = rng(9).standard_normal((2, 3)), np.full((2, 3), 5.0)
    text = loss_text("SigmoidCrossEntropyLoss", ["x", "t"],
                     "loss_param { ignore_label: 5 normalization: VALID }")
    layer, bottom, top, _ = forward(text, [x, t])
    assert top[0].data == 0          # normalizer is max(1, 0)
    dx, _ = backward(layer, bottom, top, [True, False])
    np.testing.assert_array_equal(dx, 0)


def test_sigmoid_cross_entropy_gradients_and_label_error():
    x, t = rng(10).standard_normal((4, 5)), rng(11).uniform(0, 1, (4, 5))
    t[0, :2] = -1
    text = loss_text("SigmoidCrossEntropyLoss", ["x", "t"],
                     "loss_param { ignore_label: -1 normalization: VALID }")
    layer, bottom, top = make_layer(text, [x, t])
    check_gradient(layer, bottom, top, check_bottom=[0], directions=2)
    small, sb, st = make_layer(text, [x[:2, :3], t[:2, :3]])
    check_gradient_exhaustive(small, sb, st, check_bottom=[0])
    layer.forward(bottom, top)
    with pytest.raises(CaffeError, match="label"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


# --- HingeLoss -------------------------------------------------------------------------------
def hinge_oracle(x, label, p):
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    delta = -np.ones_like(x2)
    delta[np.arange(n), label.astype(int)] = 1
    m = np.maximum(0, 1 - delta * x2)
    loss = np.sum(m ** p) / n
    grad = -delta * (np.sign(m) if p == 1 else 2 * m) / n
    return loss, grad.reshape(x.shape)


def hinge_inputs(shape, seed):
    """Scores whose margins 1 -+ x stay away from the hinge at 0."""
    x = rng(seed).uniform(-2, 2, shape)
    x[np.abs(np.abs(x) - 1) < 0.1] += 0.25
    label = rng(seed + 1).integers(0, int(np.prod(shape[1:])), shape[0]).astype(float)
    return x, label


@pytest.mark.parametrize("norm,p", [("", 1), ("hinge_loss_param { norm: L1 }", 1),
                                    ("hinge_loss_param { norm: L2 }", 2)])
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 1)])
def test_hinge(norm, p, shape):
    x, label = hinge_inputs(shape, 12)
    text = loss_text("HingeLoss", ["x", "label"], norm)
    layer, bottom, top, _ = forward(text, [x, label])
    loss, grad = hinge_oracle(x, label, p)
    np.testing.assert_allclose(top[0].data, loss, rtol=1e-12)
    dx, dl = backward(layer, bottom, top, [True, False], weight=1.5)
    np.testing.assert_allclose(dx, 1.5 * grad, rtol=1e-12)
    # the forward keeps its own margins: a second backward gives the same gradient
    dx2, _ = backward(layer, bottom, top, [True, False], weight=1.5)
    np.testing.assert_array_equal(dx2, dx)
    check_gradient(layer, bottom, top, check_bottom=[0], eps=1e-6)


def test_hinge_exhaustive_and_bad_label():
    x, label = hinge_inputs((2, 3), 14)
    for norm in ("L1", "L2"):
        layer, bottom, top = make_layer(
            loss_text("HingeLoss", ["x", "label"], f"hinge_loss_param {{ norm: {norm} }}"),
            [x, label])
        check_gradient_exhaustive(layer, bottom, top, check_bottom=[0])
    layer, bottom, top = make_layer(loss_text("HingeLoss", ["x", "label"]),
                                    [x, np.array([0.0, 3.0])])
    with pytest.raises(CaffeError, match="out of range"):
        layer.forward(bottom, top)


# --- InfogainLoss ----------------------------------------------------------------------------
def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def infogain_oracle(x, label, H, axis, ignore=None):
    p = np.moveaxis(softmax(x, axis), axis, -1)         # (..., C)
    lab = label.reshape(p.shape[:-1]).astype(int)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    rows = H[safe]                                      # (..., C)
    loss = -np.sum(valid[..., None] * rows * np.log(np.maximum(p, 1e-20)))
    grad = valid[..., None] * (p * rows.sum(-1, keepdims=True) - rows)
    return loss, int(valid.sum()), np.moveaxis(grad, -1, axis), np.moveaxis(p, -1, axis)


def infogain_case(shape, axis, seed, ignore=None):
    x = rng(seed).standard_normal(shape) * 2
    c = shape[axis]
    outer_inner = int(np.prod(shape)) // c
    label = rng(seed + 1).integers(0, c, outer_inner).astype(float)
    if ignore is not None:
        label[::3] = ignore
    H = rng(seed + 2).uniform(0, 1, (c, c)) + np.eye(c)
    return x, label, H


INFOGAIN_NORMS = [("", "valid"), ("loss_param { normalization: FULL }", "full"),
                  ("loss_param { normalization: BATCH_SIZE }", "batch"),
                  ("loss_param { normalization: NONE }", "none")]


@pytest.mark.parametrize("params,kind", INFOGAIN_NORMS)
@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((2, 3, 2, 2), 1), ((2, 3, 4), -1),
                                        ((3, 2, 4), 2)])
@pytest.mark.parametrize("ignore", [None, 1])
def test_infogain(shape, axis, params, kind, ignore):
    x, label, H = infogain_case(shape, axis, 20, ignore)
    label_shape = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    p = f"infogain_loss_param {{ axis: {axis} }} " + (
        params.replace("loss_param {", f"loss_param {{ ignore_label: {ignore}")
        if ignore is not None and params else
        (f"loss_param {{ ignore_label: {ignore} }}" if ignore is not None else params))
    text = loss_text("InfogainLoss", ["x", "label", "H"], p, tops=("loss", "prob"))
    layer, bottom, top, _ = forward(text, [x, label.reshape(label_shape), H])
    loss, valid, grad, prob = infogain_oracle(x, label, H, axis, ignore)
    a = axis % len(shape)
    norm = expected_norm(kind, int(np.prod(shape[:a])), int(np.prod(shape[a + 1:])), valid)
    np.testing.assert_allclose(top[0].data, loss / norm, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-12)
    dx = backward(layer, bottom, top, [True, False, False], weight=0.5)[0]
    np.testing.assert_allclose(dx, 0.5 * grad / norm, rtol=1e-10, atol=1e-15)


def test_infogain_gradients():
    x, label, H = infogain_case((3, 4, 2), 1, 30, ignore=2)
    text = loss_text("InfogainLoss", ["x", "label", "H"], "loss_param { ignore_label: 2 }")
    layer, bottom, top = make_layer(text, [x, label.reshape(3, 2), H])
    check_gradient(layer, bottom, top, check_bottom=[0], directions=2)
    x, label, H = infogain_case((2, 3), 1, 31)
    layer, bottom, top = make_layer(text, [x, label, H])
    check_gradient_exhaustive(layer, bottom, top, check_bottom=[0])


def test_infogain_identity_is_softmax_loss():
    x, label, _ = infogain_case((6, 5), 1, 40)
    layer, bottom, top, _ = forward(loss_text("InfogainLoss", ["x", "label", "H"]),
                                    [x, label, np.eye(5)])
    p = softmax(x, 1)
    expected = -np.mean(np.log(p[np.arange(6), label.astype(int)]))
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12)


def test_infogain_matrix_from_source(tmp_path):
    x, label, H = infogain_case((4, 3), 1, 50)
    path = tmp_path / "H.binaryproto"
    write_binary(str(path), array_to_blob_proto(H.reshape(1, 1, 3, 3).astype(np.float32)))
    text = loss_text("InfogainLoss", ["x", "label"],
                     f'infogain_loss_param {{ source: "{path}" }}')
    layer, bottom, top, _ = forward(text, [x, label])
    loss, valid, grad, _ = infogain_oracle(x, label, H.astype(np.float32).astype(float), 1)
    np.testing.assert_allclose(top[0].data, loss / valid, rtol=1e-12)
    dx = backward(layer, bottom, top, [True, False])[0]
    np.testing.assert_allclose(dx, grad / valid, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("arrays,params,match", [
    ("two", "", "source"),
    ("three", "loss_param { normalize: true }", "deprecated"),
    ("bad_h", "", "infogain matrix"),
    ("bad_label_count", "", "number of labels"),
])
def test_infogain_errors(arrays, params, match):
    x, label, H = infogain_case((4, 3), 1, 60)
    inputs = {"two": [x, label], "three": [x, label, H], "bad_h": [x, label, np.eye(2)],
              "bad_label_count": [x, np.zeros((4, 2)), H]}[arrays]
    names = ["x", "label", "H"][:len(inputs)]
    with pytest.raises(CaffeError, match=match):
        make_layer(loss_text("InfogainLoss", names, params), inputs)


def test_infogain_label_out_of_range():
    x, label, H = infogain_case((4, 3), 1, 61)
    label[1] = 3
    layer, bottom, top = make_layer(loss_text("InfogainLoss", ["x", "label", "H"]),
                                    [x, label, H])
    with pytest.raises(CaffeError, match="out of range"):
        layer.forward(bottom, top)


# --- ContrastiveLoss -------------------------------------------------------------------------
def contrastive_oracle(a, b, y, margin, legacy):
    n = a.shape[0]
    d = (a - b).reshape(n, -1)
    d2 = np.sum(d ** 2, axis=1)
    dist = np.sqrt(d2)
    sim = y.astype(int) != 0
    if legacy:
        dis = np.maximum(margin - d2, 0)
        g_dis = np.where(margin - d2 > 0, -1.0, 0.0)[:, None] * d
    else:
        dis = np.maximum(margin - dist, 0) ** 2
        g_dis = np.where(margin - dist > 0, -(margin - dist) / (dist + 1e-4), 0.0)[:, None] * d
    loss = np.sum(np.where(sim, d2, dis)) / n / 2
    grad = np.where(sim[:, None], d, g_dis) / n
    return loss, grad.reshape(a.shape)


def contrastive_case(shape, margin, seed):
    """Pairs whose distances stay away from the margin (the kink of the dissimilar term)."""
    a = rng(seed).standard_normal(shape)
    b = a + rng(seed + 1).standard_normal(shape) * 0.4
    n = shape[0]
    y = (np.arange(n) % 2).astype(float)
    d = np.sqrt(np.sum((a - b).reshape(n, -1) ** 2, axis=1))
    for i in range(n):
        for target in (margin, np.sqrt(margin)):
            if abs(d[i] - target) < 0.15:
                b[i] = a[i] + (b[i] - a[i]) * (target + 0.3) / d[i]
                d[i] = target + 0.3
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [1.0, 2.0, 0.3])
@pytest.mark.parametrize("shape", [(6, 3), (5, 4, 1, 1)])
def test_contrastive(shape, margin, legacy):
    a, b, y = contrastive_case(shape, margin, 70)
    params = (f"contrastive_loss_param {{ margin: {margin} "
              f"legacy_version: {str(legacy).lower()} }}")
    text = loss_text("ContrastiveLoss", ["a", "b", "y"], params)
    layer, bottom, top, _ = forward(text, [a, b, y])
    m = float(np.float32(margin))
    loss, grad = contrastive_oracle(a, b, y, m, legacy)
    np.testing.assert_allclose(top[0].data, loss, rtol=1e-12)
    da, db, dy = backward(layer, bottom, top, [True, True, False], weight=2.0)
    np.testing.assert_allclose(da, 2.0 * grad, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(db, -2.0 * grad, rtol=1e-10, atol=1e-15)
    # the 1e-4 in Caffe's dissimilar gradient is not in the loss: a looser threshold
    check_gradient(layer, bottom, top, check_bottom=[0, 1], threshold=1e-3)


def test_contrastive_exhaustive_and_errors():
    a, b, y = contrastive_case((3, 2), 1.0, 80)
    for legacy in ("true", "false"):
        text = loss_text("ContrastiveLoss", ["a", "b", "y"],
                         f"contrastive_loss_param {{ legacy_version: {legacy} }}")
        layer, bottom, top = make_layer(text, [a, b, y])
        check_gradient_exhaustive(layer, bottom, top, check_bottom=[0, 1], threshold=1e-3)
    layer.forward(bottom, top)
    with pytest.raises(CaffeError, match="labels"):
        layer.backward(top, [True, True, True], bottom)
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(1)
    with pytest.raises(CaffeError, match="N x C"):
        make_layer(loss_text("ContrastiveLoss", ["a", "b", "y"]),
                   [np.ones((3, 2, 2)), np.ones((3, 2, 2)), y])


# --- golden parity with BVLC Caffe (float32, layers_b) ---------------------------------------
def test_golden_euclidean_and_sigmoid_cross_entropy(shared):
    g = np.load(shared / "golden" / "layers_b" / "golden.npz")
    fc, sm, t = g["train/blob/fc"], g["train/blob/softmax"], g["train/blob/target"]
    l2, lb, lt = make_layer(loss_text("EuclideanLoss", ["softmax", "target"],
                                      "loss_weight: 2.0", tops=("l2",)),
                            [sm, t], dtype=np.float32)
    l2.forward(lb, lt)
    np.testing.assert_array_equal(lt[0].data, g["train/blob/l2"])
    l2.backward(lt, [True, False], lb)
    np.testing.assert_array_equal(lb[0].diff, g["train/diff/softmax"])
    sce, sb, st = make_layer(loss_text("SigmoidCrossEntropyLoss", ["fc", "target"],
                                       "loss_weight: 0.5", tops=("sce",)),
                             [fc, t], dtype=np.float32)
    sce.forward(sb, st)
    np.testing.assert_array_equal(st[0].data, g["train/blob/sce"])
    sce.backward(st, [True, False], sb)
    # fc feeds Softmax and SigmoidCrossEntropyLoss; split_1 is the loss's share of the diff
    np.testing.assert_array_equal(sb[0].diff, g["train/diff/fc_fc_0_split_1"])


def test_golden_infogain_softmax(shared):
    # InfogainLoss runs Caffe's softmax inside: its second top matches the golden Softmax
    g = np.load(shared / "golden" / "layers_b" / "golden.npz")
    fc = g["train/blob/fc"]
    label = np.arange(5, dtype=np.float32)
    layer, bottom, top = make_layer(
        loss_text("InfogainLoss", ["fc", "label", "H"], tops=("loss", "prob")),
        [fc, label, np.eye(16, dtype=np.float32)], dtype=np.float32)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[1].data, g["train/blob/softmax"])
