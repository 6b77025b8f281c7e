"""kernels/blocked_conv.py at strides above 1: the tiles over the stride's phases (module
docstring), against a float64 oracle, the packing of the phases against NumPy, and the
engines that use them (LOWERED_GEMM's forward, LOWERED_CCNMM's compacted weights).

The kernels run on any x86 CPU (LLVM splits the 16-float vectors where AVX-512 is missing);
only `applies` keeps other machines off the tiles."""
import numpy as np
import pytest

from caffe_lite.kernels import blocked_conv, conv_engines
from caffe_lite.kernels.blocked_conv import ALL_CHANNELS, _pack_phases, blocked_conv_forward
from caffe_lite.kernels.blocked_weight_grad import blocked_weight_grad
from caffe_lite.kernels.conv import ConvGeometry, conv2d_backward
from caffe_lite.kernels.conv_engines import LoweredGemmEngine, conv_engine
from tests.test_conv import conv_oracle

EPS = np.finfo(np.float32).eps


def _case(rng, n, c, size, m, k, stride, pad, group, dilation=(1, 1)):
    kh, kw = k
    geo = ConvGeometry(kh, kw, pad[0], pad[1], stride[0], stride[1], dilation[0],
                       dilation[1], group)
    x = rng.standard_normal((n, c) + size, dtype=np.float32)
    w = rng.standard_normal((m, c // group, kh, kw), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    return x, w, b, geo, np.full((n, m) + geo.output_shape(*size), np.nan, np.float32)


def _assert_close(y, x, w, b, geo):
    """Within the rounding of the filter's kh*kw*C/g FMAs, against a float64 oracle."""
    stride, pad = (geo.stride_h, geo.stride_w), (geo.pad_h, geo.pad_w)
    dilation = (geo.dilation_h, geo.dilation_w)
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    ref = conv_oracle(*f64, stride, pad, dilation, geo.group)
    scale = conv_oracle(*[np.abs(a) for a in f64], stride, pad, dilation, geo.group)
    assert np.all(np.abs(y - ref) <= (w[0].size + 2) * EPS * scale + 1e-30)


CASES = [
    (1, 3, (35, 35), 24, (11, 11), (4, 4), (0, 0), 1, (1, 1)),   # CaffeNet's conv1, smaller
    (2, 6, (17, 20), 12, (5, 5), (2, 2), (2, 2), 2, (1, 1)),     # groups, padding
    (3, 4, (19, 14), 9, (7, 5), (2, 3), (3, 1), 1, (1, 1)),      # uneven strides and kernel
    (1, 5, (13, 13), 20, (4, 4), (2, 2), (1, 1), 1, (1, 1)),     # kernel a multiple of stride
    (1, 2, (9, 9), 3, (6, 6), (3, 3), (0, 0), 1, (1, 1)),        # image barely the kernel
    (2, 3, (24, 24), 16, (3, 3), (2, 2), (1, 1), 1, (1, 1)),     # MobileNet's first layer
    (2, 4, (21, 21), 8, (3, 3), (2, 2), (2, 2), 1, (2, 2)),      # dilation
    (1, 4, (15, 16), 8, (2, 3), (3, 2), (1, 2), 2, (3, 1)),      # dilation past the stride
    (17, 3, (12, 12), 10, (3, 3), (2, 2), (1, 1), 1, (1, 1)),    # a batch past 16: flat too
]


@pytest.mark.parametrize("n, c, size, m, k, stride, pad, group, dilation", CASES)
def test_equals_oracle(monkeypatch, n, c, size, m, k, stride, pad, group, dilation):
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)      # small images run too
    rng = np.random.default_rng(sum(size) + m)
    x, w, b, geo, y = _case(rng, n, c, size, m, k, stride, pad, group, dilation)
    blocked_conv_forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)


@pytest.mark.parametrize("n, c, size, m, k, stride, pad, group, dilation", CASES)
def test_weight_gradient_equals_oracle(n, c, size, m, k, stride, pad, group, dilation):
    """dw and db of a strided convolution on the phases accumulate (+=) the float64
    oracle's sums, within the rounding of N*OH*OW terms."""
    rng = np.random.default_rng(sum(size) + 7 * m)
    x, w, _, geo, y = _case(rng, n, c, size, m, k, stride, pad, group, dilation)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dw, db = np.full(w.shape, 0.5, np.float32), np.full(m, 0.5, np.float32)
    blocked_weight_grad(x, dy, geo, dw, db)
    f64 = [a.astype(np.float64) for a in (x, dy)]
    terms = dy.shape[0] * dy.shape[2] * dy.shape[3]
    for got, (want, scale) in zip((dw, db), zip(_grad_oracle(*f64, geo, w.shape),
                                                _grad_oracle(*map(np.abs, f64), geo, w.shape))):
        assert np.all(np.abs(got - 0.5 - want) <= (terms + 2) * EPS * (scale + 0.5))


def _grad_oracle(x, dy, geo, wshape):
    """float64 dw and db by the lowered GEMM."""
    dw, db = np.zeros(wshape), np.zeros(dy.shape[1])
    conv2d_backward(x, np.zeros(wshape), dy, geo, dw=dw, db=db)
    return dw, db


def test_engine_runs_strided_weight_gradient_on_the_tiles(monkeypatch):
    """LOWERED_GEMM's backward of a strided layer with large output planes takes the tiles
    for dw and db, and still gives dx the lowered way."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(blocked_conv, "STRIDED_GRAD_MIN_PIXELS", 100)
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)
    rng = np.random.default_rng(6)
    x, w, b, geo, y = _case(rng, 2, 3, (31, 31), 16, (3, 3), (2, 2), (1, 1), 1)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    calls = []
    real = conv_engines.blocked_weight_grad
    monkeypatch.setattr(conv_engines, "blocked_weight_grad",
                        lambda *args: calls.append(1) or real(*args))
    dx, dw, db = np.full_like(x, np.nan), np.zeros_like(w), np.zeros_like(b)
    LoweredGemmEngine().backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
    assert calls
    dx_ref, dw_ref, db_ref = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
    conv2d_backward(x, w, dy, geo, dx=dx_ref, dw=dw_ref, db=db_ref)
    assert np.array_equal(dx, dx_ref)
    terms = dy.shape[0] * dy.shape[2] * dy.shape[3]
    scale_w, scale_b = _grad_oracle(np.abs(x.astype(np.float64)),
                                    np.abs(dy.astype(np.float64)), geo, w.shape)
    assert np.all(np.abs(dw - dw_ref) <= 2 * (terms + 2) * EPS * scale_w)
    assert np.all(np.abs(db - db_ref) <= 2 * (terms + 2) * EPS * scale_b)


@pytest.mark.parametrize("size,pad,stride", [
    ((9, 11), (1, 2), (2, 2)), ((8, 8), (0, 0), (4, 4)), ((7, 5), (3, 1), (3, 2)),
    ((5, 6), (2, 0), (1, 3)), ((1, 1), (1, 1), (2, 2))])
def test_pack_phases_equals_numpy(size, pad, stride):
    """Phase (a, b) of the padded image at (r, q) is xpad[r*sh + a, q*sw + b], zeros past
    it, and zeros after the planes."""
    (h, w), (ph, pw), (sh, sw) = size, pad, stride
    rng = np.random.default_rng(h * 10 + w)
    x = rng.standard_normal((2, 5, h, w)).astype(np.float32)
    x.view(np.uint32)[0, 2, 0, 0] = 0x7FC00001            # a NaN payload moves as it is
    hq, wq = -(-(h + 2 * ph) // sh) + 1, -(-(w + 2 * pw) // sw)   # a row past the image
    c0, cg = 1, 3
    padded = np.zeros((cg, hq * sh, wq * sw), np.float32)
    rows, cols = min(h, hq * sh - ph), min(w, wq * sw - pw)
    padded[:, ph:ph + rows, pw:pw + cols] = x[1, c0:c0 + cg, :rows, :cols]
    ref = padded.reshape(cg, hq, sh, wq, sw).transpose(0, 2, 4, 1, 3).reshape(-1)
    xb = np.full(ref.size + 9, 5.0, np.float32)
    _pack_phases(x, 1, c0, cg, ALL_CHANNELS, ph, pw, sh, sw, hq, wq, xb)
    assert np.array_equal(xb[:ref.size].view(np.uint32), ref.view(np.uint32))
    assert np.all(xb[ref.size:] == 0)


def test_applies_where_the_tiles_pay(monkeypatch):
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    x = np.zeros((1, 3, 227, 227), np.float32)
    conv1 = ConvGeometry(11, 11, 0, 0, 4, 4)
    assert blocked_conv.applies(x, conv1, 96)
    assert blocked_conv.applies(np.zeros((16, 3, 227, 227), np.float32), conv1, 96)
    assert blocked_conv.applies(x, ConvGeometry(3, 3, 1, 1, 2, 2), 16)
    assert blocked_conv.applies(x, conv1._replace(dilation_h=2, dilation_w=2), 96)
    assert not blocked_conv.applies(x.astype(np.float64), conv1, 96)
    assert not blocked_conv.applies(np.zeros((1, 3, 0, 227), np.float32), conv1, 96)
    assert not blocked_conv.applies(np.zeros((1, 1, 8, 8), np.float32),
                                    ConvGeometry(3, 3, 1, 1, 2, 2), 2)   # too little work
    # a strided weight gradient on tiles only with large output planes (14x14: no)
    x16 = np.zeros((16, 32, 28, 28), np.float32)
    assert not blocked_conv.weight_grad_applies(x16, ConvGeometry(3, 3, 1, 1, 2, 2), 32)
    assert blocked_conv.weight_grad_applies(x16, ConvGeometry(3, 3, 1, 1, 1, 1), 32)
    x8 = np.zeros((8, 3, 224, 224), np.float32)                 # MobileNet's conv1
    assert blocked_conv.weight_grad_applies(x8, ConvGeometry(3, 3, 1, 1, 2, 2), 16)
    assert not blocked_conv.weight_grad_applies(x8, ConvGeometry(3, 3, 1, 1, 2, 2), 128)
    monkeypatch.setattr(blocked_conv, "AVX512", False)
    assert not blocked_conv.applies(x, conv1, 96)


@pytest.mark.parametrize("mode", ["LOWERED_GEMM", "LOWERED_CCNMM"])
def test_engines_run_strided_forward_on_the_tiles(monkeypatch, mode):
    """LOWERED_GEMM's forward, and LOWERED_CCNMM's with a compacted weight (an all-zero
    filter and all-zero columns), on the phases."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)
    rng = np.random.default_rng(4)
    x, w, b, geo, y = _case(rng, 2, 3, (31, 31), 16, (7, 7), (2, 2), (3, 3), 1)
    w[3] = 0
    w[:, 1, 2, :] = 0
    calls = []
    real = blocked_conv.blocked_conv_forward
    monkeypatch.setattr(blocked_conv, "blocked_conv_forward",
                        lambda *args, **kw: calls.append(1) or real(*args, **kw))
    conv_engine(mode).forward(x, w, b, geo, y)
    assert calls
    _assert_close(y, x, w, b, geo)


def test_lowered_gemm_engine_keeps_direct_loops_off_the_tiles(monkeypatch):
    """Where the tiles do not apply (no AVX-512), a strided forward still equals the
    oracle (lowered GEMM or direct loops)."""
    monkeypatch.setattr(blocked_conv, "AVX512", False)
    rng = np.random.default_rng(5)
    x, w, b, geo, y = _case(rng, 2, 3, (31, 31), 16, (7, 7), (2, 2), (3, 3), 1)
    LoweredGemmEngine().forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)
