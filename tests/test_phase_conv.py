"""kernels/phase_conv.py: a strided convolution as a stride-1 one over the stride's phases."""
import numpy as np
import pytest

from caffe_lite.kernels import blocked_conv, phase_conv
from caffe_lite.kernels.conv import ConvGeometry
from caffe_lite.kernels.conv_engines import LoweredGemmEngine
from tests.test_conv import conv_oracle

EPS = np.finfo(np.float32).eps
needs_tiles = pytest.mark.skipif(not blocked_conv.AVX512, reason="the tiles need AVX-512")


def _case(rng, n, c, size, m, k, stride, pad, group):
    kh, kw = k
    geo = ConvGeometry(kh, kw, pad[0], pad[1], stride[0], stride[1], 1, 1, group)
    x = rng.standard_normal((n, c) + size, dtype=np.float32)
    w = rng.standard_normal((m, c // group, kh, kw), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    return x, w, b, geo, np.full((n, m) + geo.output_shape(*size), np.nan, np.float32)


@needs_tiles
@pytest.mark.parametrize("n, c, size, m, k, stride, pad, group", [
    (1, 3, (35, 35), 24, (11, 11), (4, 4), (0, 0), 1),      # CaffeNet's conv1, smaller
    (2, 6, (17, 20), 12, (5, 5), (2, 2), (2, 2), 2),        # groups, padding
    (3, 4, (19, 14), 9, (7, 5), (2, 3), (3, 1), 1),         # uneven strides and kernel
    (1, 5, (13, 13), 20, (4, 4), (2, 2), (1, 1), 1),        # kernel a multiple of stride
    (1, 2, (9, 9), 3, (6, 6), (3, 3), (0, 0), 1),           # image barely the kernel
])
def test_equals_oracle(monkeypatch, n, c, size, m, k, stride, pad, group):
    """Within the rounding of a sum of kh'*kw'*C*sh*sw FMAs (the phases' taps, zeros
    included), against a float64 oracle."""
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)      # small images run too
    rng = np.random.default_rng(sum(size) + m)
    x, w, b, geo, y = _case(rng, n, c, size, m, k, stride, pad, group)
    assert phase_conv.applies(x, geo, m)
    phase_conv.phase_conv_forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)


def _assert_close(y, x, w, b, geo):
    stride, pad = (geo.stride_h, geo.stride_w), (geo.pad_h, geo.pad_w)
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    ref = conv_oracle(*f64, stride, pad, (1, 1), geo.group)
    scale = conv_oracle(*[np.abs(a) for a in f64], stride, pad, (1, 1), geo.group)
    taps = (-(-geo.kernel_h // stride[0]) * -(-geo.kernel_w // stride[1]) * stride[0]
            * stride[1] * w.shape[1])
    assert np.all(np.abs(y - ref) <= (taps + 2) * EPS * scale + 1e-30)


def test_applies_only_where_the_phases_pay():
    x = np.zeros((1, 3, 227, 227), np.float32)
    conv1 = ConvGeometry(11, 11, 0, 0, 4, 4)
    assert phase_conv.applies(x, conv1, 96) == blocked_conv.AVX512
    assert not phase_conv.applies(np.zeros((16, 3, 227, 227), np.float32), conv1, 96)
    assert not phase_conv.applies(x.astype(np.float64), conv1, 96)
    assert not phase_conv.applies(x, ConvGeometry(3, 3, 1, 1, 2, 2), 96)     # 1.78x the work
    assert not phase_conv.applies(x, ConvGeometry(3, 3, 1, 1, 1, 1), 96)     # stride 1
    assert not phase_conv.applies(x, conv1._replace(dilation_h=2, dilation_w=2), 96)
    assert not phase_conv.applies(np.zeros((1, 3, 0, 227), np.float32), conv1, 96)


@needs_tiles
def test_lowered_gemm_engine_runs_strided_forward_on_the_phases(monkeypatch):
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)
    rng = np.random.default_rng(4)
    x, w, b, geo, y = _case(rng, 2, 3, (31, 31), 16, (7, 7), (2, 2), (3, 3), 1)
    calls = []
    real = phase_conv.phase_conv_forward
    monkeypatch.setattr(phase_conv, "phase_conv_forward",
                        lambda *args: calls.append(1) or real(*args))
    LoweredGemmEngine().forward(x, w, b, geo, y)
    assert calls
    _assert_close(y, x, w, b, geo)
    monkeypatch.setattr(phase_conv, "MAX_WASTE", 0)             # off: the direct loops
    LoweredGemmEngine().forward(x, w, b, geo, y)
    assert len(calls) == 1
