"""kernels/nhwc_weight_grad.py: the weight and bias gradients from channels-last copies, on
the indexed tiles, against a float64 oracle, and where the LOWERED_GEMM engine uses them.

The tiles run on any x86 CPU (LLVM splits the 16-float vectors where AVX-512 is missing), so
these tests run everywhere; only `applies` keeps other machines on the other paths.
"""
import numpy as np
import pytest

from caffe_lite.kernels import blocked_conv, neuron, nhwc_weight_grad as nwg
from caffe_lite.kernels.conv import ConvGeometry
from caffe_lite.kernels.conv_engines import conv_engine
from caffe_lite.kernels.nhwc_weight_grad import nhwc_weight_grad

from test_blocked_conv import _assert_grads_close, assert_same_bits_on_one_and_two_threads

GRID = [
    # n, c, size, m, (kh, kw), pad, stride, dilation, group
    (2, 8, 6, 16, (3, 3), 1, 1, 1, 1),        # one block of channels, one vector of outputs
    (3, 12, 7, 20, (3, 2), (1, 0), 1, 1, 1),  # channels and outputs past a block's end
    (2, 16, 9, 48, (3, 3), 1, 1, 1, 1),       # a row of three vectors
    (2, 16, 9, 64, (3, 3), 1, 1, 1, 1),       # four vectors: two tiles of two
    (2, 9, 8, 112, (3, 3), 0, 1, 1, 1),       # seven vectors: three, then two twos
    (2, 10, 11, 40, (5, 5), 2, 2, 1, 1),      # stride 2
    (3, 6, 10, 24, (3, 3), 2, 1, 2, 2),       # dilation, groups of three channels
    (1, 32, 8, 64, (1, 1), 0, 1, 1, 4),       # 1x1, four groups
    (2, 7, (9, 13), 33, (2, 3), (1, 2), (2, 1), 1, 1),   # uneven strides and sizes
]


def _case(rng, n, c, size, m, k, pad, stride, dilation, group):
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    geo = ConvGeometry(k[0], k[1], ph, pw, sh, sw, dilation, dilation, group)
    h, w = size if isinstance(size, tuple) else (size, size)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    dy = rng.standard_normal((n, m) + geo.output_shape(h, w), dtype=np.float32)
    return x, dy, geo, (m, c // group) + k


@pytest.mark.parametrize("n,c,size,m,k,pad,stride,dilation,group", GRID)
def test_gradients_accumulate_the_oracles_sums(n, c, size, m, k, pad, stride, dilation, group):
    rng = np.random.default_rng(hash((n, c, m, k)) % 2**32)
    x, dy, geo, wshape = _case(rng, n, c, size, m, k, pad, stride, dilation, group)
    dw, db = np.full(wshape, 0.5, np.float32), np.full(m, 0.5, np.float32)
    nhwc_weight_grad(x, dy, geo, dw, db)
    _assert_grads_close(dw, db, x, dy, geo, start=0.5)


def test_chunks_and_threads_give_the_same_bits(monkeypatch):
    """Positions summed chunk by chunk (here 5 at a time) stay within the bound, and each
    sum is one worker's: one thread and two give the same bits."""
    monkeypatch.setattr(nwg, "POSITION_CHUNK", 5)
    monkeypatch.setattr(neuron, "PARALLEL_MIN", 1)           # split however small
    rng = np.random.default_rng(3)
    x, dy, geo, wshape = _case(rng, 3, 24, 7, 40, (3, 3), 1, 1, 1, 1)
    assert_same_bits_on_one_and_two_threads(nhwc_weight_grad, x, dy, geo, wshape)


def test_images_packed_a_chunk_at_a_time_give_the_same_bits(monkeypatch):
    """A chunk of whole images at a time (here 2 of 5, then 1) sums the same terms in the
    same order as the whole batch at once."""
    rng = np.random.default_rng(8)
    x, dy, geo, wshape = _case(rng, 5, 12, 6, 24, (3, 3), 1, 1, 1, 2)
    results = []
    for positions in (10 ** 9, 2 * 36):
        monkeypatch.setattr(nwg, "CHUNK_POSITIONS", positions)
        dw, db = np.zeros(wshape, np.float32), np.zeros(24, np.float32)
        nhwc_weight_grad(x, dy, geo, dw, db)
        results.append((dw, db))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])
    _assert_grads_close(*results[1], x, dy, geo)


def test_a_gradient_that_does_not_fit_is_one_clear_error():
    rng = np.random.default_rng(4)
    x, dy, geo, wshape = _case(rng, 2, 8, 6, 16, (3, 3), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        nhwc_weight_grad(x, dy[:, :8], geo, np.zeros(wshape, np.float32))


def test_where_the_engine_uses_it(monkeypatch):
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(nwg, "MAX_OUTPUTS", 192)
    geo = ConvGeometry(3, 3, 1, 1)
    x = np.zeros((16, 64, 8, 8), np.float32)
    assert nwg.applies(x, geo, 64)
    assert nwg.applies(x, geo._replace(group=2), 256)        # 128 outputs a group
    assert not nwg.applies(x, geo, 256)                      # OpenBLAS's width
    assert not nwg.applies(x, geo, 32)
    assert not nwg.applies(x[:, :16], geo, 64)               # few input channels
    assert not nwg.applies(x[:8], geo, 64)                   # a small batch
    assert not nwg.applies(x, geo._replace(kernel_h=1, kernel_w=1, pad_h=0, pad_w=0), 64)
    assert not nwg.applies(x, geo._replace(stride_h=2), 64)
    monkeypatch.setattr(blocked_conv, "AVX512", False)
    assert not nwg.applies(x, geo, 64)


def test_wider_layers_run_here_on_zen(monkeypatch):
    """256-512 outputs a group too where the CPU is an AMD Zen (widest_outputs)."""
    assert nwg.widest_outputs("znver4") == 512
    assert nwg.widest_outputs("sapphirerapids") == nwg.widest_outputs("generic") == 192
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(nwg, "MAX_OUTPUTS", nwg.widest_outputs("znver4"))
    x = np.zeros((16, 64, 8, 8), np.float32)
    assert nwg.applies(x, ConvGeometry(3, 3, 1, 1), 512)
    assert not nwg.applies(x, ConvGeometry(3, 3, 1, 1), 1024)


def test_the_engine_runs_it_and_matches_the_lowered_gradients(monkeypatch):
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    calls = []
    real = nwg.nhwc_weight_grad
    monkeypatch.setattr(nwg, "nhwc_weight_grad",
                        lambda *args: calls.append(args[0].shape) or real(*args))
    rng = np.random.default_rng(6)
    x, dy, geo, wshape = _case(rng, 16, 32, 6, 64, (3, 3), 1, 1, 1, 1)
    w = rng.standard_normal(wshape, dtype=np.float32)
    dw, db = np.zeros(wshape, np.float32), np.zeros(64, np.float32)
    conv_engine("LOWERED_GEMM").backward(x, w, dy, geo, dx=None, dw=dw, db=db)
    assert calls == [x.shape]
    _assert_grads_close(dw, db, x, dy, geo)
