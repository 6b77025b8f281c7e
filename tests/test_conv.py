"""Convolution and Deconvolution: a naive float64 oracle, gradient checks over parameter
grids, Caffe's golden blobs, the batched kernels' chunking, and the fork hooks."""
import itertools
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.common import TRAIN
from caffe_lite.errors import CaffeError
from caffe_lite.kernels import conv as conv_kernels
from caffe_lite.kernels.im2col import col2im, conv_out_size, im2col, im2col_bm, im2col_rows_bm
from caffe_lite.layers.convolution import ConvolutionLayer
from gradcheck import (assert_f32_sum_close, check_gradient, check_gradient_exhaustive,
                       f32_magnitudes, layer_param, make_layer)

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
CONV = 'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '


# --- oracle ---------------------------------------------------------------------------------

def out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def conv_oracle(x, w, b, stride, pad, dilation, group):
    """Cross-correlation by explicit kernel offsets, float64."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for g, ki, kj in itertools.product(range(group), range(kh), range(kw)):
        patch = xp[:, g * cg:(g + 1) * cg, ki * dh:ki * dh + sh * (oh - 1) + 1:sh,
                   kj * dw:kj * dw + sw * (ow - 1) + 1:sw]
        y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch,
                                               w[g * mg:(g + 1) * mg, :, ki, kj])
    if b is not None:
        y += b[None, :, None, None]
    return y


def deconv_oracle(x, w, b, stride, pad, dilation, group):
    """Each input pixel scatters its weighted kernel into the output, float64."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, m, h, wd = x.shape
    _, cg, kh, kw = w.shape
    c = cg * group
    oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    ow = sw * (wd - 1) + dw * (kw - 1) + 1 - 2 * pw
    yp = np.zeros((n, c, oh + 2 * ph, ow + 2 * pw))
    mg = m // group
    for g, ki, kj in itertools.product(range(group), range(kh), range(kw)):
        yp[:, g * cg:(g + 1) * cg, ki * dh:ki * dh + sh * (h - 1) + 1:sh,
           kj * dw:kj * dw + sw * (wd - 1) + 1:sw] += np.einsum(
               "nmhw,mc->nchw", x[:, g * mg:(g + 1) * mg], w[g * mg:(g + 1) * mg, :, ki, kj])
    y = yp[:, :, ph:ph + oh, pw:pw + ow]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


# --- helpers --------------------------------------------------------------------------------

def conv_text(kind, num_output, kernel, stride=(1, 1), pad=(0, 0), dilation=1, group=1,
              bias=True, extra=""):
    return (f'name: "c" type: "{kind}" bottom: "x" top: "y" convolution_param {{ '
            f"num_output: {num_output} kernel_h: {kernel[0]} kernel_w: {kernel[1]} "
            f"stride_h: {stride[0]} stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} "
            f"dilation: {dilation} group: {group} bias_term: {str(bias).lower()} {extra}}}")


def randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for blob in layer.blobs:
        blob.data[...] = rng.standard_normal(blob.shape)


def build(text, x, dtype=np.float64, seed=1):
    layer, bottom, top = make_layer(text, [x], dtype=dtype)
    randomize(layer, seed)
    layer.forward(bottom, top)
    return layer, bottom, top


# the grid: stride x pad x group x dilation x bias_term, on an odd-sized image with a
# non-square kernel (3 x 2)
GRID = list(itertools.product([(1, 1), (2, 1)], [(0, 0), (1, 2)], [1, 2], [1, 2],
                              [True, False]))


@pytest.mark.parametrize("stride,pad,group,dilation,bias", GRID)
def test_conv_forward_and_gradient_grid(stride, pad, group, dilation, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    layer, bottom, top = build(conv_text("Convolution", 6, (3, 2), stride, pad, dilation,
                                         group, bias), x)
    b = layer.blobs[1].data if bias else None
    expected = conv_oracle(x, layer.blobs[0].data, b, stride, pad, (dilation,) * 2, group)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("stride,pad,group,dilation,bias", GRID)
def test_deconv_forward_and_gradient_grid(stride, pad, group, dilation, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 5))
    layer, bottom, top = build(conv_text("Deconvolution", 6, (3, 2), stride, pad, dilation,
                                         group, bias), x)
    assert layer.blobs[0].shape == (4, 6 // group, 3, 2)
    b = layer.blobs[1].data if bias else None
    expected = deconv_oracle(x, layer.blobs[0].data, b, stride, pad, (dilation,) * 2, group)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


# shapes beyond the grid: 1x1 fast path, depthwise, tall kernels, big pads, strided 1x1
CASES = [
    # (N, C, H, W), M, kernel, stride, pad, dilation, group
    ((2, 3, 5, 4), 4, (1, 1), (1, 1), (0, 0), 1, 1),      # 1x1: no im2col
    ((2, 4, 5, 5), 6, (1, 1), (1, 1), (0, 0), 1, 2),      # grouped 1x1
    ((3, 4, 6, 7), 4, (1, 1), (2, 2), (0, 0), 1, 2),      # strided 1x1 goes through im2col
    ((1, 2, 3, 3), 2, (1, 1), (1, 1), (1, 1), 1, 1),      # padded 1x1 goes through im2col
    ((2, 4, 5, 5), 4, (3, 3), (1, 1), (1, 1), 1, 4),      # depthwise
    ((2, 2, 11, 5), 3, (5, 1), (3, 1), (2, 0), 1, 1),     # tall kernel, stride 3
    ((1, 1, 3, 3), 2, (3, 3), (1, 1), (2, 2), 1, 1),      # pad larger than half the kernel
    ((2, 3, 9, 9), 2, (3, 3), (2, 2), (3, 3), 3, 1),      # dilation 3 with a big pad
    ((1, 2, 1, 9), 3, (1, 3), (1, 2), (0, 1), 2, 1),      # height 1
    ((40, 3, 4, 4), 5, (2, 2), (2, 2), (0, 0), 1, 1),     # batch > one transpose tile
    ((3, 5, 1, 1), 7, (1, 1), (1, 1), (0, 0), 1, 1),      # one pixel: an InnerProduct's products
]


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("shape,m,kernel,stride,pad,dilation,group", CASES)
def test_more_shapes(kind, shape, m, kernel, stride, pad, dilation, group):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    oracle = conv_oracle if kind == "Convolution" else deconv_oracle
    layer, bottom, top = build(conv_text(kind, m, kernel, stride, pad, dilation, group), x)
    expected = oracle(x, layer.blobs[0].data, layer.blobs[1].data, stride, pad,
                      (dilation,) * 2, group)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_exhaustive_tiny(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 3))
    layer, bottom, top = build(conv_text(kind, 2, (2, 2), (1, 1), (1, 0), 1, 1), x)
    check_gradient_exhaustive(layer, bottom, top)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_float32_matches_float64(kind):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6, 9, 8))
    text = conv_text(kind, 4, (3, 3), (2, 1), (1, 1), 1, 2)
    l64, b64, t64 = build(text, x, np.float64)
    l32, b32, t32 = build(text, x, np.float32)
    dy = rng.standard_normal(t64[0].shape)
    for layer, bottom, top in ((l64, b64, t64), (l32, b32, t32)):
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
    y_mag, dx_mag, (dw_mag, db_mag) = f32_magnitudes(text, x, dy, build)
    # terms per sum, at most: an output adds (6 inputs / 2 groups) * 3x3 products and the
    # bias, a bottom gradient (4 outputs / 2 groups) * 3x3, a parameter gradient one per
    # batch item and position (Deconvolution swaps the roles, not the counts)
    y_terms, dx_terms = (6 // 2) * 9 + 1, (4 // 2) * 9
    positions = x.shape[0] * max(np.prod(x.shape[2:]), np.prod(t64[0].shape[2:]))
    assert_f32_sum_close(t32[0].data, t64[0].data, y_mag, y_terms)
    assert_f32_sum_close(b32[0].diff, b64[0].diff, dx_mag, dx_terms)
    assert_f32_sum_close(l32.blobs[0].diff, l64.blobs[0].diff, dw_mag, positions)
    assert_f32_sum_close(l32.blobs[1].diff, l64.blobs[1].diff, db_mag, positions)


def test_backward_accumulates_params_and_overwrites_bottom():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6))
    layer, bottom, top = build(conv_text("Convolution", 4, (3, 3), pad=(1, 1)), x)
    layer.forward(bottom, top)
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    bottom[0].diff[...] = 123.0
    layer.backward(top, [True], bottom)
    dx, dw, db = bottom[0].diff.copy(), layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()
    bottom[0].diff[...] = -7.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dx)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * dw)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * db)
    # param_propagate_down gates the parameter gradients
    layer.param_propagate_down = [False, False]
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * dw)
    np.testing.assert_allclose(bottom[0].diff, dx)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_batch_chunks_match_one_pass(kind, monkeypatch):
    """A small WORKSPACE_LIMIT splits the batch into chunks; the results must not change."""
    x = np.random.default_rng(6).standard_normal((7, 4, 6, 5))

    def run():
        layer, bottom, top = build(conv_text(kind, 4, (3, 2), (2, 1), (1, 1), 1, 2), x)
        layer.forward(bottom, top)
        top[0].diff[...] = np.linspace(-1, 1, top[0].count).reshape(top[0].shape)
        layer.backward(top, [True], bottom)
        return [top[0].data.copy(), bottom[0].diff.copy()] + [p.diff.copy()
                                                               for p in layer.blobs]

    reference = run()
    for limit in (1, 3000):
        monkeypatch.setattr(conv_kernels, "WORKSPACE_LIMIT", limit)
        for a, b in zip(run(), reference):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_multiple_bottoms_share_weights():
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 5, 5))
    text = conv_text("Convolution", 2, (3, 3)).replace('top: "y"', 'top: "y" top: "y2"')
    text = text.replace('bottom: "x"', 'bottom: "x" bottom: "x2"')
    layer, bottom, top = make_layer(text, [x1, x2])
    randomize(layer)
    layer.forward(bottom, top)
    for xi, ti in zip((x1, x2), top):
        np.testing.assert_allclose(ti.data, conv_oracle(xi, layer.blobs[0].data,
                                                        layer.blobs[1].data, (1, 1), (0, 0),
                                                        (1, 1), 1), rtol=1e-12)
    check_gradient(layer, bottom, top)


def test_axis_and_one_spatial_axis():
    rng = np.random.default_rng(8)
    # axis 2 of a 5-d blob: the first two axes are the batch
    x = rng.standard_normal((2, 2, 3, 5, 4))
    text = (CONV + 'num_output: 4 kernel_size: 3 '
            'pad: 1 axis: 2 }')
    layer, bottom, top = build(text, x)
    assert top[0].shape == (2, 2, 4, 5, 4)
    expected = conv_oracle(x.reshape(4, 3, 5, 4), layer.blobs[0].data, layer.blobs[1].data,
                           (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top[0].data.reshape(expected.shape), expected, rtol=1e-12)
    check_gradient(layer, bottom, top)
    # one spatial axis runs as 2-d with a unit height
    x = rng.standard_normal((2, 3, 9))
    text = (CONV + 'num_output: 2 kernel_size: 3 '
            'stride: 2 pad: 1 dilation: 2 }')
    layer, bottom, top = build(text, x)
    assert layer.blobs[0].shape == (2, 3, 3)
    assert top[0].shape == (2, 2, 4)
    expected = conv_oracle(x[:, :, None], layer.blobs[0].data[:, :, None],
                           layer.blobs[1].data, (1, 2), (0, 1), (1, 2), 1)
    np.testing.assert_allclose(top[0].data, expected[:, :, 0], rtol=1e-12)
    check_gradient(layer, bottom, top)
    for kind in ("Convolution", "Deconvolution"):      # stride 1: the flipped-kernel path
        text = (f'name: "c" type: "{kind}" bottom: "x" top: "y" convolution_param {{ '
                f'num_output: 4 kernel_size: 3 pad: 1 group: 1 }}')
        layer, bottom, top = build(text, x)
        check_gradient(layer, bottom, top)


def test_repeated_fields_per_axis_and_reshape():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 8, 7))
    text = (CONV + 'num_output: 3 kernel_size: 3 '
            'kernel_size: 2 stride: 2 stride: 1 pad: 0 pad: 1 dilation: 1 dilation: 2 }')
    layer, bottom, top = build(text, x)
    g = layer.geometry
    assert (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
            g.dilation_h, g.dilation_w) == (3, 2, 2, 1, 0, 1, 1, 2)
    np.testing.assert_allclose(
        top[0].data, conv_oracle(x, layer.blobs[0].data, layer.blobs[1].data, (2, 1), (0, 1),
                                 (1, 2), 1), rtol=1e-12)
    # a new batch size and image size reshape the top
    bottom[0].reshape((3, 2, 10, 9))
    bottom[0].data[...] = rng.standard_normal(bottom[0].shape)
    layer.forward(bottom, top)
    assert top[0].shape == (3, 3, 4, 9)


def test_effective_weight_hook_is_used_by_forward_and_backward():
    class MaskedConvolution(ConvolutionLayer):
        def effective_weight(self):
            return self.blobs[0].data * self.mask

    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 5, 5))
    layer = MaskedConvolution(layer_param(conv_text("Convolution", 4, (3, 3))), TRAIN,
                              np.float64)
    from caffe_lite.blob import Blob
    bottom, top = [Blob(x.shape, np.float64)], [Blob((), np.float64)]
    bottom[0].data[...] = x
    layer.setup(bottom, top)
    randomize(layer)
    layer.mask = rng.random(layer.blobs[0].shape) > 0.5
    layer.forward(bottom, top)
    w = layer.blobs[0].data * layer.mask
    np.testing.assert_allclose(top[0].data, conv_oracle(x, w, layer.blobs[1].data, (1, 1),
                                                        (0, 0), (1, 1), 1), rtol=1e-12)
    check_gradient(layer, bottom, top, check_params=False)


def test_im2col_col2im_single_image_layout():
    """Caffe's layout: row (c*kh + ki)*kw + kj, column oh*out_w + ow; col2im is its adjoint."""
    rng = np.random.default_rng(11)
    img = rng.standard_normal((2, 5, 4))
    col = np.empty((2 * 3 * 2, 3 * 5))     # out_h 3, out_w 5
    im2col(img, 3, 2, 1, 1, 2, 1, 1, 1, col)
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)))
    for c, ki, kj, oh, ow in itertools.product(range(2), range(3), range(2), range(3),
                                               range(5)):
        assert col[(c * 3 + ki) * 2 + kj, oh * 5 + ow] == padded[c, oh * 2 + ki, ow + kj]
    with pytest.raises(ValueError):
        im2col(img, 3, 2, 1, 1, 2, 1, 1, 1, np.empty((12, 12)))
    z = rng.standard_normal(col.shape)
    back = np.empty_like(img)
    col2im(z, 3, 2, 1, 1, 2, 1, 1, 1, back)
    assert np.isclose(np.sum(col * z), np.sum(img * back))


@pytest.mark.parametrize("stride,dilation,batch", [(1, 1, 1), (2, 1, 3), (1, 2, 2)])
def test_im2col_rows_lowers_exactly_the_rows_asked(stride, dilation, batch):
    """LOWERED_CCNMM's lowering of kept columns only: row i is im2col's row rows[i]."""
    rng = np.random.default_rng(12)
    xt = rng.standard_normal((3, 7, 6, batch)).astype(np.float32)
    args = (3, 2, 1, 1, stride, stride, dilation, dilation)
    out_h = conv_out_size(7, 3, 1, stride, dilation)
    out_w = conv_out_size(6, 2, 1, stride, dilation)
    full = im2col_bm(xt, *args, out_h, out_w, np.empty((18, out_h * out_w * batch), np.float32))
    rows = np.array([17, 0, 5, 5, 11], np.int64)
    part = im2col_rows_bm(xt, rows, *args, out_h, out_w,
                          np.full((5, out_h * out_w * batch), np.nan, np.float32))
    np.testing.assert_array_equal(part, full[rows])
    with pytest.raises(ValueError, match="outside"):
        im2col_rows_bm(xt, np.array([18]), *args, out_h, out_w,
                       np.empty((1, out_h * out_w * batch), np.float32))


@pytest.mark.parametrize("text,message", [
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial dimension"),
    ("kernel_h: 3", "nonzero"),
    ("kernel_size: 3 stride: 0", "nonzero"),
    ("kernel_size: 3 group: 2", "multiple of group"),
    ("num_output: 5 kernel_size: 3 group: 3", "multiples of group"),
    ("", "kernel_size"),
])
def test_setup_errors(text, message):
    if "num_output" not in text:
        text = "num_output: 6 " + text
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(CaffeError, match=message):
        make_layer(CONV + text + ' }', [x])


def test_spatial_axis_errors():
    with pytest.raises(CaffeError, match="spatial axes"):
        make_layer(CONV + 'num_output: 2 kernel_size: 1 }', [np.zeros((1, 2, 3, 3, 3))])
    layer, bottom, top = make_layer(CONV + 'num_output: 2 kernel_size: 1 }',
                                    [np.zeros((1, 2, 3, 3))])
    bottom[0].reshape((1, 3, 3, 3))
    with pytest.raises(CaffeError, match="Input size incompatible"):
        layer.forward(bottom, top)


def test_blobs_from_layer_parameter():
    """Weights carried in the LayerParameter (Caffe's layer constructor) and their check."""
    from caffe_lite.io.blobs import array_to_blob_proto
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2) / 10
    param = layer_param(conv_text("Convolution", 2, (2, 2)))
    param.blobs.add().CopyFrom(array_to_blob_proto(w))
    param.blobs.add().CopyFrom(array_to_blob_proto(np.array([1.0, -1.0])))
    layer = ConvolutionLayer(param, TRAIN, np.float64)
    from caffe_lite.blob import Blob
    bottom, top = [Blob((1, 3, 4, 4), np.float64)], [Blob((), np.float64)]
    layer.setup(bottom, top)
    np.testing.assert_allclose(layer.blobs[0].data, w)
    del param.blobs[1]
    param.blobs.add().CopyFrom(array_to_blob_proto(np.zeros(3)))
    with pytest.raises(CaffeError, match="Incorrect bias shape"):
        ConvolutionLayer(param, TRAIN, np.float64).setup(bottom, [Blob((), np.float64)])


# --- golden blobs from BVLC Caffe -----------------------------------------------------------

def _golden(case):
    path = GOLDEN / case / "golden.npz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    z = np.load(path)
    return {k: z[k] for k in z.files}


def _layer_text(case, name):
    from caffe_lite.io.prototxt import read_net_param
    net = read_net_param(str(GOLDEN / case / "net_train.prototxt"))
    lp = next(lp for lp in net.layer if lp.name == name)
    return lp


# (case, layer, bottom blob, top blob, bottom-diff blob or None, slope of the leaky ReLU
#  that runs in place on the top (layers_a's relu1, negative_slope 0.1) or None, and on the
#  bottom)
GOLDEN_LAYERS = [
    ("layers_a", "conv1", "data", "conv1", None, 0.1, None),
    ("layers_a", "conv2", "conv1", "conv2", "conv1", None, 0.1),
    ("layers_a", "deconv", "cat", "deconv", "cat_cat_0_split_0", None, None),
    ("lenet", "conv1", "data", "conv1", None, None, None),
    ("lenet", "conv2", "pool1", "conv2", "pool1", None, None),
]


@pytest.mark.parametrize("case,name,bottom_name,top_name,dx_name,relu_top,relu_bottom",
                         GOLDEN_LAYERS)
def test_golden_layer(case, name, bottom_name, top_name, dx_name, relu_top, relu_bottom):
    """Layer-level parity with BVLC Caffe: the golden bottom, parameters and top diff in,
    the golden top, parameter gradients and bottom diff out (float32)."""
    from caffe_lite.blob import Blob
    from caffe_lite.layers import create_layer
    golden = _golden(case)
    lp = _layer_text(case, name)
    x = golden[f"train/blob/{bottom_name}"]
    layer = create_layer(lp, TRAIN, np.float32)
    bottom, top = [Blob(x.shape, np.float32)], [Blob((), np.float32)]
    bottom[0].data[...] = x
    layer.setup(bottom, top)
    for i, blob in enumerate(layer.blobs):
        blob.data[...] = golden[f"train/param/{name}/{i}"]
    layer.forward(bottom, top)
    y = top[0].data
    if relu_top is not None:
        y = np.where(y > 0, y, relu_top * y)
    np.testing.assert_allclose(y, golden[f"train/blob/{top_name}"], rtol=1e-4, atol=1e-5)
    top[0].diff[...] = golden[f"train/diff/{top_name}"]
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(top, [dx_name is not None], bottom)
    for i, blob in enumerate(layer.blobs):
        np.testing.assert_allclose(blob.diff, golden[f"train/pdiff/{name}/{i}"], rtol=1e-4,
                                   atol=1e-5)
    if dx_name is not None:
        dx = bottom[0].diff
        if relu_bottom is not None:
            dx = np.where(x > 0, dx, relu_bottom * dx)
        np.testing.assert_allclose(dx, golden[f"train/diff/{dx_name}"], rtol=1e-4, atol=1e-5)


def test_split_batch_slices_restores_blas_threads_and_raises():
    from caffe_lite.kernels import gemm
    before = gemm.batch_workers()
    assert gemm.split_batch(5, lambda w, s, e: (w, s, e), workers=2) == [(0, 0, 2), (1, 2, 5)]
    assert gemm.split_batch(1, lambda w, s, e: (w, s, e), workers=2) == [(0, 0, 1)]
    assert gemm.batch_workers() == before

    def boom(worker, start, stop):
        if worker == 1:
            raise RuntimeError("worker failed")
    if before > 1:
        with pytest.raises(RuntimeError, match="worker failed"):
            gemm.split_batch(4, boom, workers=2)
        assert gemm.batch_workers() == before


def test_one_worker_matches_two(monkeypatch):
    """Splitting the batch over workers changes only the order of the gradient sums."""
    from caffe_lite.kernels import gemm
    x = np.random.default_rng(12).standard_normal((6, 4, 7, 7))
    results = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(gemm, "batch_workers", lambda: workers)
        layer, bottom, top = build(conv_text("Convolution", 4, (3, 3), pad=(1, 1), group=2), x)
        top[0].diff[...] = np.linspace(-1, 1, top[0].count).reshape(top[0].shape)
        layer.backward(top, [True], bottom)
        results.append([top[0].data.copy(), bottom[0].diff.copy()]
                       + [p.diff.copy() for p in layer.blobs])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, pad, group, bias", [
    (3, 1, 1, 1, True), (3, 2, 0, 2, True), (1, 1, 0, 3, False), (5, 3, 2, 1, False)])
def test_one_image_product_split_over_output_channels(monkeypatch, kernel, stride, pad, group,
                                                      bias):
    """A batch of one lowers once and splits its product by output channels over our
    workers (with one worker: the whole product on the calling thread)."""
    from caffe_lite.kernels import gemm
    from caffe_lite.kernels.conv import ConvGeometry, conv2d_forward
    rng = np.random.default_rng(kernel + stride + group)
    x = rng.standard_normal((1, 6, 11, 9))
    w = rng.standard_normal((12, 6 // group, kernel, kernel))
    b = rng.standard_normal(12) if bias else None
    geo = ConvGeometry(kernel, kernel, pad, pad, stride, stride, 1, 1, group)
    ref = conv_oracle(x, w, b, (stride,) * 2, (pad,) * 2, (1, 1), group)
    monkeypatch.setattr(conv_kernels, "ONE_IMAGE_SPLIT_MIN_MACS", 0)
    for workers in (1, 2, 3):
        monkeypatch.setattr(gemm, "batch_workers", lambda: workers)
        monkeypatch.setattr(conv_kernels, "batch_workers", lambda: workers)
        y = np.full(ref.shape, np.nan)
        conv2d_forward(x, w, b, geo, y)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group, bias", [(1, True), (2, False), (3, True)])
def test_pointwise_product_of_each_image_in_place(monkeypatch, group, bias):
    """A 1x1 convolution multiplies each image as it lies (no batch-minor copies), split by
    images over the workers."""
    from caffe_lite.kernels import gemm
    from caffe_lite.kernels.conv import ConvGeometry, conv2d_forward
    rng = np.random.default_rng(group)
    x = rng.standard_normal((5, 6, 11, 10))
    w = rng.standard_normal((12, 6 // group, 1, 1))
    b = rng.standard_normal(12) if bias else None
    ref = conv_oracle(x, w, b, (1, 1), (0, 0), (1, 1), group)
    calls = []
    real = conv_kernels._pointwise_forward
    monkeypatch.setattr(conv_kernels, "_pointwise_forward",
                        lambda *args: calls.append(1) or real(*args))
    for workers in (1, 2, 3):
        monkeypatch.setattr(gemm, "batch_workers", lambda: workers)
        y = np.full(ref.shape, np.nan)
        conv2d_forward(x, w, b, ConvGeometry(1, 1, group=group), y)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert len(calls) == 3


@pytest.mark.parametrize("g, rows, cols", [(1, 1, 1), (1, 33, 70), (3, 40, 5), (2, 64, 64)])
def test_add_transposed_adds_each_group_transposed(g, rows, cols):
    from caffe_lite.kernels.im2col import add_transposed
    rng = np.random.default_rng(rows * cols)
    src = rng.standard_normal((g, cols, rows)).astype(np.float32)
    dst = rng.standard_normal((g, rows, cols)).astype(np.float32)
    expected = dst + src.transpose(0, 2, 1)
    add_transposed(src, dst)
    np.testing.assert_array_equal(dst, expected)
    with pytest.raises(ValueError):
        add_transposed(src, np.zeros((g, cols + 1, rows), np.float32))


def test_weight_gradient_into_a_non_contiguous_array():
    """conv2d_backward accumulates into whatever dw it is given, a strided view included."""
    from caffe_lite.kernels.conv import ConvGeometry, conv2d_backward
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    dy = rng.standard_normal((3, 6, 6, 6))
    geo = ConvGeometry(3, 3, 1, 1, group=2)
    dense = np.ones_like(w)
    conv2d_backward(x, w, dy, geo, dw=dense)
    holder = np.ones((12, 2, 3, 3))
    strided = holder[::2]
    conv2d_backward(x, w, dy, geo, dw=strided)
    np.testing.assert_allclose(strided, dense, rtol=1e-12)
    assert (holder[1::2] == 1).all()


@pytest.mark.parametrize("n, group, bias", [(5, 1, True), (1, 1, False), (4, 2, True)])
def test_one_pixel_convolution_is_one_product_of_the_images(monkeypatch, n, group, bias):
    """A 1x1 convolution of 1x1 images (a classifier written as a convolution) multiplies
    the images as the rows of one product (parallel_matmul), the threads splitting the
    weight; a grouped one keeps the lowered path."""
    from caffe_lite.kernels.conv import ConvGeometry, conv2d_forward
    rng = np.random.default_rng(n + group)
    x = rng.standard_normal((n, 6, 1, 1))
    w = rng.standard_normal((12, 6 // group, 1, 1))
    b = rng.standard_normal(12) if bias else None
    geo = ConvGeometry(1, 1, 0, 0, 1, 1, 1, 1, group)
    ref = conv_oracle(x, w, b, (1, 1), (0, 0), (1, 1), group)
    calls = []
    product = conv_kernels.parallel_matmul
    monkeypatch.setattr(conv_kernels, "parallel_matmul",
                        lambda *a, **k: calls.append(1) or product(*a, **k))
    y = np.full(ref.shape, np.nan)
    conv2d_forward(x, w, b, geo, y)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert bool(calls) == (group == 1)
