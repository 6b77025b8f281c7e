"""kernels/blocked_conv.py: the stride-1 convolution on register-blocked tiles, against a
float64 NumPy oracle, in both layouts, and its use by the LOWERED_GEMM engine.

The kernels run on any x86 CPU (LLVM splits the 16-float vectors where AVX-512 is missing),
so these tests run everywhere; only `applies` keeps other machines on the lowered GEMM.
"""
from contextlib import contextmanager

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from caffe_lite import threads
from caffe_lite.kernels import blocked_conv
from caffe_lite.kernels import blocked_weight_grad as bwg
from caffe_lite.kernels.blocked_conv import blocked_conv_forward
from caffe_lite.kernels.blocked_weight_grad import blocked_weight_grad
from caffe_lite.kernels.conv import ConvGeometry, conv2d_backward, conv2d_forward
from caffe_lite.kernels.conv_engines import conv_engine

EPS = np.finfo(np.float32).eps


def _oracle(x, w, bias, geo):
    """float64 convolution by windows of the padded image."""
    g = geo.group
    n, c, _, _ = x.shape
    m = w.shape[0]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))
    span_h = geo.dilation_h * (geo.kernel_h - 1) + 1
    span_w = geo.dilation_w * (geo.kernel_w - 1) + 1
    win = sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    win = win[:, :, ::geo.stride_h, ::geo.stride_w, ::geo.dilation_h, ::geo.dilation_w]
    # (n, c, oh, ow, kh, kw)
    cg, mg = c // g, m // g
    out = [np.einsum("ncyxij,mcij->nmyx", win[:, k * cg:(k + 1) * cg],
                     w[k * mg:(k + 1) * mg].astype(np.float64)) for k in range(g)]
    y = np.concatenate(out, axis=1)
    return y if bias is None else y + bias[None, :, None, None]


def _case(rng, n, c, size, m, k, pad, group, dilation=1, bias=True):
    kh, kw = k if isinstance(k, tuple) else (k, k)
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    geo = ConvGeometry(kh, kw, ph, pw, 1, 1, dilation, dilation, group)
    h, w_ = size if isinstance(size, tuple) else (size, size)
    x = rng.standard_normal((n, c, h, w_), dtype=np.float32)
    w = rng.standard_normal((m, c // group, kh, kw), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32) if bias else None
    oh = h + 2 * ph - dilation * (kh - 1)
    ow = w_ + 2 * pw - dilation * (kw - 1)
    return x, w, b, geo, np.full((n, m, oh, ow), np.nan, np.float32)


@contextmanager
def _threads(count):
    old = threads.get_num_threads()
    threads.set_num_threads(count)
    try:
        yield
    finally:
        threads.set_num_threads(old)


def _assert_close(y, x, w, b, geo):
    """Within the bound of K sequential float32 multiply-adds (plus the bias)."""
    ref = _oracle(x, w, b, geo)
    scale = _oracle(np.abs(x), np.abs(w), None if b is None else np.abs(b), geo)
    taps = w[0].size
    assert np.all(np.abs(y - ref) <= (taps + 2) * EPS * scale + 1e-30)


GRID = [
    # n, c, size, m, k, pad, group, dilation
    (1, 8, 7, 5, 3, 1, 1, 1),          # flat, fewer outputs than a tile's rows
    (1, 16, (9, 13), 12, 3, (0, 2), 1, 1),
    (2, 6, 10, 8, 5, 2, 2, 1),         # flat, groups
    (3, 4, 12, 9, (3, 5), (1, 2), 1, 2),   # flat, dilation, non-square kernel
    (16, 8, 6, 16, 3, 1, 1, 1),        # lanes, one whole block
    (17, 6, 5, 11, 3, 1, 1, 1),        # lanes, then one image flat
    (20, 12, 8, 24, 3, 1, 4, 1),       # lanes, groups of three channels, then four flat
    (32, 5, 9, 7, 1, 0, 1, 1),         # lanes, 1x1
    (18, 4, 11, 6, 3, 2, 1, 2),        # lanes, dilation
]


@pytest.mark.parametrize("n,c,size,m,k,pad,group,dilation", GRID)
def test_equals_oracle(n, c, size, m, k, pad, group, dilation):
    rng = np.random.default_rng(hash((n, c, m)) % 2**32)
    x, w, b, geo, y = _case(rng, n, c, size, m, k, pad, group, dilation)
    blocked_conv_forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)


def test_weight_read_in_place_or_copied_when_strided():
    """The tiles read a C-contiguous weight where it lies, row by row; a strided one (a
    Fortran-ordered copy, a slice) gives the same bits through its contiguous copy."""
    rng = np.random.default_rng(5)
    x, w, b, geo, y = _case(rng, 1, 16, (9, 13), 12, 3, (0, 2), 1, 1)
    blocked_conv_forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)
    for strided in (np.asfortranarray(w), np.concatenate([w, w], axis=1)[:, :16]):
        y2 = np.full_like(y, np.nan)
        blocked_conv_forward(x, strided, b, geo, y2)
        assert np.array_equal(y2, y)


@pytest.mark.parametrize("n", [2, 12])
def test_tap_blocks_add_onto_the_tile(monkeypatch, n):
    """Filters longer than TAP_BLOCK are summed block by block (the tile's add form)."""
    monkeypatch.setattr(blocked_conv, "TAP_BLOCK", 16)
    rng = np.random.default_rng(7)
    x, w, b, geo, y = _case(rng, n, 10, 6, 9, 3, 1, 1)    # 90 taps: six blocks
    blocked_conv_forward(x, w, b, geo, y)
    _assert_close(y, x, w, b, geo)


@pytest.mark.parametrize("n", [1, 16, 20])
@pytest.mark.parametrize("pad,dilation,stride", [(1, 1, 1), (0, 2, 1), (2, 1, 1), (2, 1, 2)])
@pytest.mark.parametrize("count", [2, 3])
def test_same_bits_on_one_and_more_threads(monkeypatch, n, pad, dilation, stride, count):
    """Splitting over workers (by blocks of output channels where a block of 16 images or a
    flat image is alone) moves whole tiles: each output's sum keeps its order. Stride 2:
    the phases (tests/test_strided_tiles.py)."""
    monkeypatch.setattr(blocked_conv, "TILES_SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(3)
    x, w, b, geo, y1 = _case(rng, n, 16, 9, 40, 3, pad, 1, dilation=dilation)
    geo = geo._replace(stride_h=stride, stride_w=stride)
    y1 = np.full(y1.shape[:2] + geo.output_shape(9, 9), np.nan, np.float32)
    y2 = y1.copy()
    with _threads(1):
        blocked_conv_forward(x, w, b, geo, y1)
    with _threads(count):
        blocked_conv_forward(x, w, b, geo, y2)
    assert np.array_equal(y1.view(np.uint32), y2.view(np.uint32))
    _assert_close(y2, x, w, b, geo)


class _Pixels:
    """A stand-in layout: the shares weigh a unit by its blocks times len(layout.pix)."""

    def __init__(self, vectors):
        self.pix = range(vectors)


@pytest.mark.parametrize("blocks, expected", [
    ((9, 8), [[0], [1]]),           # a first unit over half: each worker still gets one
    ((8, 9), [[0], [1]]),
    ((9, 7), [[0], [1]]),
    ((4, 4, 4, 4), [[0, 1], [2, 3]]),
    ((16, 1, 1), [[0], [1, 2]]),
])
def test_shares_cut_at_the_nearest_boundary(blocks, expected):
    layout = _Pixels(10)
    units = [(layout, 0, g, 0, b, 0, 10) for g, b in enumerate(blocks)]
    shares = blocked_conv._shares(units, 2)
    assert [[unit[2] for unit in share] for share in shares] == expected


def test_uneven_compacted_groups_run_on_both_workers(monkeypatch):
    """LOWERED_CCNMM's groups of 9 and 8 blocks: the plan gives each worker one."""
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 2)
    monkeypatch.setattr(blocked_conv, "batch_workers", lambda: 2)
    plan = blocked_conv._plan((16, 8, 6, 6), (16, 256, 6, 6), geo, 1 << 30, [9, 8])
    assert len(plan.shares) == 2


def _poison_workspaces(x_size, workers):
    """NaN in every worker's padded-image buffer: a tile that reads a row its worker did not
    pack turns its outputs to NaN."""
    from caffe_lite.kernels.gemm import workspace
    for worker in range(workers):
        workspace(worker).get("blocked_x", (x_size,), np.float32)[:] = np.nan


@pytest.mark.parametrize("n,c,size,m,k,pad,group,dilation", [
    (16, 5, 9, 8, 3, 1, 1, 1),          # one block of images, one of filters
    (16, 4, (7, 12), 20, 3, (2, 0), 1, 2),   # no side pads: rows are one run
    (16, 6, 8, 28, 3, 1, 2, 1),         # groups of 2 and 2 blocks
    (16, 3, 10, 8, (5, 3), (2, 1), 1, 1),
    (17, 6, 9, 8, 3, 1, 1, 1),          # one image flat after the block: whole pairs
])
@pytest.mark.parametrize("count", [2, 3])
def test_workers_split_outputs_where_the_weight_is_small(monkeypatch, n, c, size, m, k, pad,
                                                         group, dilation, count):
    """A block of 16 images in fewer (image, group) pairs than workers, or in pairs that do
    not share evenly, and a weight smaller than the image: each worker computes every
    output channel of a range of pixels and packs only the rows those read. The sums keep
    their order, so the bits equal one worker's."""
    monkeypatch.setattr(blocked_conv, "TILES_SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(11)
    x, w, b, geo, y1 = _case(rng, n, c, size, m, k, pad, group, dilation=dilation)
    y2 = y1.copy()
    with _threads(1):
        blocked_conv_forward(x, w, b, geo, y1)
    with _threads(count):
        groups = blocked_conv.pack_groups(w, group)
        plan = blocked_conv._plan(x.shape, y2.shape, geo, 1 << 30,
                                  [gr.blocks for gr in groups], [len(gr.taps) for gr in groups])
        units = [unit for share in plan.shares for unit in share]
        split = any(v1 - v0 < len(layout.pix) for layout, *_, v0, v1 in units)
        assert split == (n == 16 and group % count != 0)    # else whole pairs
        assert len(plan.shares) == count or not split
        _poison_workspaces(plan.x_size, count)
        blocked_conv_forward(x, w, b, geo, y2)
    assert np.array_equal(y1.view(np.uint32), y2.view(np.uint32))
    _assert_close(y2, x, w, b, geo)


def test_output_split_cuts_unequal_groups_evenly(monkeypatch):
    """A compacted weight's groups of 9 and 8 blocks: cut at output vectors, each worker
    computes half the work to within a vector's blocks."""
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 2)
    monkeypatch.setattr(blocked_conv, "batch_workers", lambda: 2)
    plan = blocked_conv._plan((16, 64, 13, 13), (16, 136, 13, 13), geo, 1 << 30, [9, 8],
                              [40, 40])
    costs = [sum(blocked_conv._cost(unit) for unit in share) for share in plan.shares]
    assert len(costs) == 2 and abs(costs[0] - costs[1]) <= 9
    covered = {}
    for share in plan.shares:
        for layout, _, g, b0, b1, v0, v1 in share:
            assert (b0, b1) == (0, [9, 8][g])
            covered.setdefault(g, []).append((v0, v1))
    for g, ranges in covered.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == 169
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_large_weights_keep_the_output_channel_split(monkeypatch):
    """At batch 1 a large layer's weight (512 x 2304) is 20 times its image: each worker
    takes half the output channels, as before."""
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 1)
    monkeypatch.setattr(blocked_conv, "batch_workers", lambda: 2)
    plan = blocked_conv._plan((1, 256, 8, 8), (1, 512, 8, 8), geo, 1 << 30, [64], [2304])
    assert [[unit[3:5] for unit in share] for share in plan.shares] == [[(0, 32)], [(32, 64)]]


def test_shapes_that_do_not_fit_are_one_line_errors():
    rng = np.random.default_rng(2)
    x, w, b, geo, y = _case(rng, 2, 8, 6, 4, 3, 1, 2)
    with pytest.raises(ValueError, match="does not fit"):
        blocked_conv_forward(x, w[:, :3], b, geo, y)               # 3 channels a group, not 4
    with pytest.raises(ValueError, match="does not fit"):
        blocked_weight_grad(x, y[:, :3], geo, np.zeros_like(w))  # dy with 3 outputs, not 4


def test_applies_only_where_tiles_pay(monkeypatch):
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 1)
    x = np.zeros((16, 32, 8, 8), np.float32)
    assert blocked_conv.applies(x, geo, 32)
    assert blocked_conv.weight_grad_applies(x, geo, 32)
    assert not blocked_conv.applies(x.astype(np.float64), geo, 32)
    assert not blocked_conv.applies(x, geo._replace(stride_h=2, stride_w=2), 32)
    flat = np.zeros((1, 32, 16, 16), np.float32)
    assert blocked_conv.applies(flat, geo, 64)              # 4.7 M multiply-adds
    assert blocked_conv.applies(flat, geo, 16)              # 1.2 M
    assert not blocked_conv.applies(np.zeros((1, 4, 8, 8), np.float32), geo, 8)  # 18 K: too little
    assert blocked_conv.applies(np.zeros((1, 256, 16, 16), np.float32), geo, 64)  # 2304 taps
    one = geo._replace(kernel_h=1, kernel_w=1, pad_h=0, pad_w=0)    # 1x1: a plain product
    assert not blocked_conv.applies(np.zeros((1, 512, 16, 16), np.float32), one, 512)
    assert not blocked_conv.applies(np.zeros((8, 32, 56, 56), np.float32), one, 64)
    assert not blocked_conv.applies(np.zeros((32, 128, 8, 8), np.float32), one, 8)
    assert blocked_conv.applies(np.zeros((32, 128, 8, 8), np.float32),
                                one._replace(pad_h=1, pad_w=1), 8)       # padded: not 1x1
    wide = np.zeros((16, 128, 8, 8), np.float32)
    assert blocked_conv.applies(wide, geo, 256)
    assert not blocked_conv.weight_grad_applies(wide, geo, 256)     # 256 outputs
    assert blocked_conv.weight_grad_applies(wide, geo._replace(group=4), 256)   # 64 a group
    monkeypatch.setattr(blocked_conv, "AVX512", False)
    assert not blocked_conv.applies(x, geo, 32)


def _grad_oracle(x, dy, geo, wshape):
    """float64 dw and db, and the same sums over |x| and |dy| (the rounding bound's scale)."""
    out = []
    for xs, ds in ((x, dy), (np.abs(x), np.abs(dy))):
        dw, db = np.zeros(wshape), np.zeros(dy.shape[1])
        conv2d_backward(xs.astype(np.float64), np.zeros(wshape), ds.astype(np.float64), geo,
                        dw=dw, db=db)
        out += [dw, db]
    return out


def _assert_grads_close(dw, db, x, dy, geo, start=0.0):
    dw_ref, db_ref, dw_scale, db_scale = _grad_oracle(x, dy, geo, dw.shape)
    terms = dy.shape[0] * dy.shape[2] * dy.shape[3]
    assert np.all(np.abs(dw - start - dw_ref) <= (terms + 2) * EPS * (dw_scale + abs(start)))
    assert np.all(np.abs(db - start - db_ref) <= (terms + 2) * EPS * (db_scale + abs(start)))


@pytest.mark.parametrize("n,c,size,m,k,pad,group,dilation", GRID)
def test_weight_gradient_equals_oracle(n, c, size, m, k, pad, group, dilation):
    """dw and db accumulate (+=) the oracle's sums, in both layouts."""
    rng = np.random.default_rng(hash((n, m, c)) % 2**32)
    x, w, _, geo, y = _case(rng, n, c, size, m, k, pad, group, dilation)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dw, db = np.full(w.shape, 0.5, np.float32), np.full(m, 0.5, np.float32)
    blocked_weight_grad(x, dy, geo, dw, db)
    _assert_grads_close(dw, db, x, dy, geo, start=0.5)


@pytest.mark.parametrize("n", [1, 16])
def test_weight_gradient_chunks_and_threads(monkeypatch, n):
    """Positions summed chunk by chunk (here 5 per chunk) stay within the bound. With one
    image (block) the workers split the output channels, so the result has the same bits
    on one thread and on two."""
    monkeypatch.setattr(bwg, "POSITION_CHUNK", 5)
    rng = np.random.default_rng(5)
    x, w, _, geo, y = _case(rng, n, 7, 8, 13, 3, 1, 1)       # 63 taps: 10 tiles + 3 single
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    assert_same_bits_on_one_and_two_threads(blocked_weight_grad, x, dy, geo, w.shape)


def assert_same_bits_on_one_and_two_threads(weight_grad, x, dy, geo, wshape):
    """dw and db from `weight_grad` on one thread and on two: the same bits, within the
    rounding bound."""
    results = []
    old = threads.get_num_threads()
    try:
        for count in (1, 2):
            threads.set_num_threads(count)
            dw, db = np.zeros(wshape, np.float32), np.zeros(wshape[0], np.float32)
            weight_grad(x, dy, geo, dw, db)
            results.append((dw, db))
    finally:
        threads.set_num_threads(old)
    _assert_grads_close(*results[0], x, dy, geo)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("n,pad,dilation", [(16, 1, 1), (2, 2, 1), (9, 2, 2)])
def test_lowered_gemm_engine_uses_tiles_for_forward_and_data_gradient(monkeypatch, n, pad,
                                                                      dilation):
    """The engine's forward, its flipped data gradient and its weight and bias gradients
    run on tiles where they apply, and equal the lowered convolution's to float32
    rounding."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)      # small images run flat too
    calls = []
    real = blocked_conv.blocked_conv_forward
    monkeypatch.setattr(blocked_conv, "blocked_conv_forward",
                        lambda *args, **kw: calls.append(args[0].shape) or real(*args, **kw))
    rng = np.random.default_rng(11)
    x, w, b, geo, y = _case(rng, n, 32, 9, 24, 3, pad, 2, dilation)   # 144 and 108 taps
    engine = conv_engine("LOWERED_GEMM")
    engine.forward(x, w, b, geo, y)
    ref = y.copy()
    conv2d_forward(x, w, b, geo, ref)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx, dw, db = np.full_like(x, np.nan), np.zeros_like(w), np.zeros_like(b)
    engine.backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
    dx_ref, dw_ref, db_ref = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
    conv2d_backward(x, w, dy, geo, dx=dx_ref, dw=dw_ref, db=db_ref)
    assert calls == [x.shape, dy.shape]
    taps = w[0].size
    for got, want in ((y, ref), (dx, dx_ref)):
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 2 * (taps + 2) * EPS * scale
    _assert_grads_close(dw, db, x, dy, geo)


def _kept_rows(w, group, keep):
    """w with only the first keep[g] filters of each group non-zero, and its compacted
    groups (LOWERED_CCNMM's, kernels/sparse.py)."""
    from caffe_lite.kernels.sparse import compact
    mg = w.shape[0] // group
    w = w.copy()
    for g, k in enumerate(keep):
        w[g * mg + k:(g + 1) * mg] = 0
    w3 = w.reshape(group, mg, -1)
    kept = [compact(wg, gather_macs=0, column_gather_macs=0)[:3] for wg in w3]
    return w, blocked_conv.pack_groups(w, group, kept)


@pytest.mark.parametrize("n,size", [(16, 5), (3, 6)])       # lanes (25 vectors), flat
@pytest.mark.parametrize("tap_block", [512, 16])            # tiles storing, then adding
def test_last_blocks_of_up_to_half_the_rows_run_half_tiles(monkeypatch, n, size, tap_block):
    """Groups keeping 8k + 1..4 filters end on the half-height tiles, 8k + 5..7 on full
    ones: every kept channel equals the oracle, the dropped ones hold their bias, and no
    channel past a group's kept filters is written from the tile buffer."""
    monkeypatch.setattr(blocked_conv, "TAP_BLOCK", tap_block)
    monkeypatch.setattr(blocked_conv, "TILES_SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(17)
    keep = [1, 4, 5, 8, 11, 12, 15, 0]
    x, w, b, geo, y = _case(rng, n, 16, size, 16 * len(keep), 3, 1, len(keep))
    w, groups = _kept_rows(w, len(keep), keep)
    assert [gr.blocks for gr in groups] == [-(-k // 8) for k in keep]
    with _threads(2):
        blocked_conv_forward(x, w, b, geo, y, groups=groups)
    _assert_close(y, x, w, b, geo)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("keep", [[3, 0], [0, 0]])
def test_workers_fill_the_dropped_channels_of_their_images(monkeypatch, count, keep):
    """The channels of all-zero filters hold the bias (or 0) in every image, whichever
    worker's images they are; with no filter kept at all too."""
    monkeypatch.setattr(blocked_conv, "TILES_SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(19)
    for bias in (True, False):
        x, w, b, geo, y = _case(rng, 21, 4, 6, 16, 3, 1, 2, bias=bias)
        w, groups = _kept_rows(w, 2, keep)
        with _threads(count):
            blocked_conv_forward(x, w, b, geo, y, groups=groups)
        _assert_close(y, x, w, b, geo)
        zero = ~w.reshape(16, -1).any(axis=1)
        want = 0 if b is None else b[zero][None, :, None, None]
        assert np.array_equal(y[:, zero], np.broadcast_to(want, y[:, zero].shape))
