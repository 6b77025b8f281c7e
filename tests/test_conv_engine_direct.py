"""LOWERED_GEMM's forward on the direct loops (conv_engines.direct_pays): strided layers of a
few input channels, such as MobileNet's first convolution."""
import numpy as np
import pytest

from caffe_lite.kernels import conv_engines
from caffe_lite.kernels.conv import ConvGeometry, conv2d_forward
from caffe_lite.kernels.conv_engines import conv_engine, direct_pays

EPS = np.finfo(np.float32).eps


def test_where_the_direct_loops_run():
    geo = ConvGeometry(3, 3, 1, 1, 2, 2)
    x = np.zeros((8, 3, 20, 20), np.float32)
    assert direct_pays(x, geo, 16)
    assert not direct_pays(x, geo, 96)                        # a GEMM with enough rows
    assert direct_pays(x[:1], geo, 96)                        # ... but a single image
    assert not direct_pays(x, geo._replace(stride_h=1, stride_w=1), 16)    # tiles / lowered
    assert not direct_pays(np.zeros((8, 8, 20, 20), np.float32), geo, 16)  # 8 channels
    assert direct_pays(np.zeros((8, 8, 20, 20), np.float32), geo._replace(group=2), 16)


@pytest.mark.parametrize("n,c,m,k,stride,pad,group", [
    (8, 3, 16, 3, 2, 1, 1),           # mobilenet-0.5's conv1, small
    (1, 3, 24, 5, 3, 0, 1),
    (2, 4, 8, 3, (2, 1), (1, 0), 2),
])
def test_the_direct_forward_equals_the_lowered_one(monkeypatch, n, c, m, k, stride, pad, group):
    calls = []
    real = conv_engines.DirectConv.forward
    monkeypatch.setattr(conv_engines.DirectConv, "forward",
                        lambda self, *a: calls.append(1) or real(self, *a))
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    geo = ConvGeometry(k, k, ph, pw, sh, sw, group=group)
    rng = np.random.default_rng(n + c + m)
    x = rng.standard_normal((n, c, 13, 11), dtype=np.float32)
    w = rng.standard_normal((m, c // group, k, k), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    y = np.empty((n, m) + geo.output_shape(13, 11), np.float32)
    engine = conv_engine("LOWERED_GEMM")
    for step in range(2):              # the weight changed in place: the listing is rebuilt
        engine.forward(x, w, b, geo, y)
        ref = np.empty_like(y)
        conv2d_forward(x, w, b, geo, ref)
        taps = w[0].size
        assert np.abs(y - ref).max() <= 2 * (taps + 2) * EPS * np.abs(ref).max()
        w *= -0.5
    assert calls == [1, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, group", [(1, 1), (2, 2)])
def test_channel_blocks_keep_the_bits(monkeypatch, dtype, stride, group):
    """The direct loops sum channel block by channel block; any block size gives the bits
    of one block holding every channel (each output's sums keep their order), and spans
    of 3 to 24 vectors run on tiles of several widths."""
    from caffe_lite.kernels import direct_conv
    rng = np.random.default_rng(7)
    for width in (3, 9, 17, 40):
        x = rng.standard_normal((2, 8, 9, width)).astype(dtype)
        w = rng.standard_normal((6, 8 // group, 3, 3)).astype(dtype)
        w[rng.random(w.shape) < 0.6] = 0
        bias = rng.standard_normal(6).astype(dtype)
        geo = ConvGeometry(3, 3, 1, 1, stride, stride, 1, 1, group)
        oh, ow = (9 + 2 - 3) // stride + 1, (width + 2 - 3) // stride + 1
        outs = []
        for block_bytes in (1 << 30, 1):             # one block; one channel per block
            monkeypatch.setattr(direct_conv, "L1_INPUT_BYTES", block_bytes)
            y = np.empty((2, 6, oh, ow), dtype)
            direct_conv.DirectConv().forward(x, w, bias, geo, y)
            outs.append(y)
        np.testing.assert_array_equal(outs[0], outs[1])
        want = np.empty_like(outs[0])
        conv2d_forward(x, w, bias, geo, want)
        eps = np.finfo(dtype).eps
        scale = np.abs(x).max() * np.abs(w).sum(axis=(1, 2, 3)).max() + np.abs(bias).max()
        np.testing.assert_allclose(outs[0], want, rtol=0, atol=(8 * 9 + 2) * eps * scale)
