"""SSL's conv_mode engines (kernels/sparse_conv_engines.py) against LOWERED_GEMM: forward over
random geometries and sparsity patterns, backward, the weight cache, and the TRAIN-phase note."""
import logging
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from caffe_lite import threads
from caffe_lite.common import TEST, TRAIN
from caffe_lite.kernels import blocked_conv, sparse, sparse_conv_engines
from caffe_lite.kernels.conv import ConvGeometry
from caffe_lite.kernels.conv_engines import CONV_ENGINES, conv_engine
from caffe_lite.kernels.sparse_conv_engines import WeightCache
from gradcheck import check_gradient, make_layer
from sparsity import SETTINGS, f32_bound, keeps, patterns, seeds, sparsify

MODES = ("LOWERED_CSRMM", "LOWERED_CCNMM", "DIRECT_SCONV", "DIRECT_DCONV")


@st.composite
def geometries(draw):
    """(geometry, (N, C, H, W), M) with an output of at least 1x1."""
    g, cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    # at least the kernel's extent, pads included
    h = max(1, dh * (kh - 1) + 1 - 2 * ph + draw(st.integers(0, 4)))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw + draw(st.integers(0, 4)))
    geo = ConvGeometry(kh, kw, ph, pw, sh, sw, dh, dw, g)
    return geo, (draw(st.integers(1, 3)), g * cg, h, w), g * mg


def conv(mode, x, w, bias, geo, engine=None):
    oh, ow = geo.output_shape(*x.shape[2:])
    y = np.full((x.shape[0], w.shape[0], oh, ow), np.nan, x.dtype)
    (engine or conv_engine(mode)).forward(x, w, bias, geo, y)
    return y


def random_case(geo, shape, m, pattern, keep, seed, bias_term=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    k = shape[1] // geo.group * geo.kernel_h * geo.kernel_w
    w = sparsify(rng.standard_normal((m, k)), pattern, rng, keep).astype(np.float32).reshape(
        m, shape[1] // geo.group, geo.kernel_h, geo.kernel_w)
    bias = rng.standard_normal(m).astype(np.float32) if bias_term else None
    return x, w, bias


def assert_matches_dense(got, x, w, bias, geo):
    """Both within (K + 1 + 2) eps32 * (|w| * |x| + |b|) of the exact value (the bias is one
    more term of the sum), so within twice that of each other."""
    dense = conv("LOWERED_GEMM", x, w, bias, geo)
    mag = conv("LOWERED_GEMM", np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
               None if bias is None else np.abs(bias).astype(np.float64), geo)
    bound = 2 * f32_bound(w[0].size + 1, mag)
    excess = np.abs(got.astype(np.float64) - dense) - bound
    assert (excess <= 0).all(), f"max excess {excess.max():.3g}"


def test_every_ssl_mode_has_an_engine():
    assert set(MODES) | {"LOWERED_GEMM"} == set(CONV_ENGINES)


@SETTINGS
@given(geometries(), st.sampled_from(MODES), patterns, keeps, seeds, st.booleans(),
       st.booleans())
def test_forward_matches_lowered_gemm(case, mode, pattern, keep, seed, bias_term, split):
    geo, shape, m = case
    x, w, bias = random_case(geo, shape, m, pattern, keep, seed, bias_term)
    if split:       # the batch over three workers and the kernels' own row split
        with mock.patch.object(sparse, "SPLIT_MIN_MACS", 0), \
                mock.patch.object(threads, "get_num_threads", lambda: 3):
            got = conv(mode, x, w, bias, geo)
    else:
        got = conv(mode, x, w, bias, geo)
    assert_matches_dense(got, x, w, bias, geo)
    if pattern == "rows":       # a filter with no weight outputs its bias, exactly
        zero = ~w.reshape(m, -1).any(axis=1)
        want = 0 if bias is None else bias[zero][None, :, None, None]
        assert (got[:, zero] == want).all()


@SETTINGS
@given(geometries(), patterns, keeps, seeds, st.booleans())
def test_ccnmm_on_tiles_matches_lowered_gemm(case, pattern, keep, seed, bias_term):
    """LOWERED_CCNMM's compacted weight on the blocked convolution's tiles (forced here on
    any machine and for small images; strided geometries keep the lowered product)."""
    geo, shape, m = case
    x, w, bias = random_case(geo, shape, m, pattern, keep, seed, bias_term)
    with mock.patch.object(blocked_conv, "AVX512", True), \
            mock.patch.object(blocked_conv, "FLAT_MIN_MACS", 0):
        got = conv("LOWERED_CCNMM", x, w, bias, geo)
    assert_matches_dense(got, x, w, bias, geo)
    zero = ~w.reshape(m, -1).any(axis=1)     # a filter with no weight outputs its bias
    want = 0 if bias is None else bias[zero][None, :, None, None]
    assert (got[:, zero] == want).all()


def test_ccnmm_runs_on_tiles_where_they_apply(monkeypatch):
    """Whole 16-image blocks of a stride-1 layer: the compacted weight goes to the tiles,
    packed once per weight, and the lowered product is not called."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 2)
    x, w, bias = random_case(geo, (16, 8, 6, 6), 10, "columns", 0.4, 3)
    engine = conv_engine("LOWERED_CCNMM")
    packs = []
    real = blocked_conv.pack_groups
    monkeypatch.setattr(blocked_conv, "pack_groups",     # with kept rows and columns
                        lambda *args: packs.append(len(args) == 3) or real(*args))
    with mock.patch.object(type(engine.product), "forward",
                           side_effect=AssertionError("lowered")):
        for _ in range(2):
            assert_matches_dense(conv("LOWERED_CCNMM", x, w, bias, geo, engine), x, w, bias,
                                 geo)
    assert sum(packs) == 1


# lanes (16 images), flat (one image) and phases (stride 2, one image)
@pytest.mark.parametrize("n,stride", [(16, 1), (1, 1), (1, 2)])
def test_ccnmm_tiles_pack_only_the_input_channels_they_read(monkeypatch, n, stride):
    """Input channels whose every tap is zero in the compacted weight (those the layer
    before pruned by rows) are not packed: the packing's channel list names the others,
    and the output matches the dense convolution."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)
    geo = ConvGeometry(3, 3, 1, 1, stride, stride, 1, 1, 2)
    x, w, bias = random_case(geo, (n, 12, 9, 9), 10, "columns", 0.7, 5)
    w[:5, [0, 3, 4]] = 0                # group 0 reads channels 1, 2, 5; group 1 all six
    w[:5, 1, 0, 0] = 0                  # a zero tap: channel 1 still read
    packed = []
    real = blocked_conv._inputs_read
    monkeypatch.setattr(blocked_conv, "_inputs_read",
                        lambda *args: packed.append(real(*args)[0].tolist()) or real(*args))
    got = conv("LOWERED_CCNMM", x, w, bias, geo)
    assert packed == [[1, 2, 5], []]    # [] for every channel
    assert_matches_dense(got, x, w, bias, geo)


def test_ccnmm_checks_the_weight_once_where_tiles_do_not_pay(monkeypatch):
    """A stride-1 layer whose tiles do not pay (a small image) falls back to the lowered
    product with the groups built alongside the tiles' ones: one check of the weight
    against its compacted form per pass, not one for the tiles and another for the
    product."""
    monkeypatch.setattr(blocked_conv, "AVX512", True)
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 2)
    x, w, bias = random_case(geo, (2, 4, 5, 5), 6, "columns", 0.4, 11)
    engine = conv_engine("LOWERED_CCNMM")
    assert not blocked_conv.applies(x, geo, 6)
    checks = []
    real = sparse_conv_engines._same_as_compact
    monkeypatch.setattr(sparse_conv_engines, "_same_as_compact",
                        lambda *args: checks.append(1) or real(*args))
    for _ in range(3):
        assert_matches_dense(conv("LOWERED_CCNMM", x, w, bias, geo, engine), x, w, bias, geo)
    assert len(checks) == 2                     # the first pass builds, the others check once
    w[0] *= 2                                   # changed in place: rebuilt, still right
    assert_matches_dense(conv("LOWERED_CCNMM", x, w, bias, geo, engine), x, w, bias, geo)
    assert engine.product._given is None


@pytest.mark.parametrize("mode", MODES)
def test_backward_is_the_dense_one(mode):
    geo = ConvGeometry(3, 2, 1, 0, 2, 1, 1, 2, 2)
    x, w, bias = random_case(geo, (2, 4, 7, 8), 6, "elementwise", 0.3, 5)
    dy = np.random.default_rng(6).standard_normal(conv(mode, x, w, bias, geo).shape).astype(
        np.float32)
    grads = {}
    for name in (mode, "LOWERED_GEMM"):
        engine = conv_engine(name)
        conv(name, x, w, bias, geo, engine)
        dx, dw, db = np.empty_like(x), np.ones_like(w), np.ones_like(bias)
        engine.backward(x, w, dy, geo, dx=dx, dw=dw, db=db)
        grads[name] = dx, dw, db
    for got, want in zip(grads[mode], grads["LOWERED_GEMM"]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("geometry", ["kernel_size: 3 pad: 1 group: 2",
                                      "kernel_h: 2 kernel_w: 3 stride: 2 dilation: 2"])
def test_gradient_through_the_layer(mode, geometry):
    """float64, sparse weights: the check perturbs every weight in place, zeros included, so
    each forward must see the new weights (the cache rebuilds on any changed bit)."""
    text = (f'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ '
            f'num_output: 4 {geometry} conv_mode: {mode} }}')
    rng = np.random.default_rng(7)
    layer, bottom, top = make_layer(text, [rng.standard_normal((2, 4, 6, 7))])
    w = layer.blobs[0].data
    w[...] = rng.standard_normal(w.shape) * (rng.random(w.shape) < 0.4)
    w[1] = 0
    layer.blobs[1].data[...] = rng.standard_normal(4)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("mode", MODES + ("CCNMM on tiles",))
def test_changed_weights_give_the_new_result(mode, monkeypatch):
    if mode == "CCNMM on tiles":
        mode = "LOWERED_CCNMM"
        monkeypatch.setattr(blocked_conv, "AVX512", True)
        monkeypatch.setattr(blocked_conv, "FLAT_MIN_MACS", 0)
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 1)
    x, w, bias = random_case(geo, (2, 3, 6, 6), 4, "elementwise", 0.3, 9)
    engine = conv_engine(mode)
    assert_matches_dense(conv(mode, x, w, bias, geo, engine), x, w, bias, geo)
    # in place, as a solver update or a pycaffe assignment does: same array, same address
    w[0] = 0                                    # a filter pruned
    w[1:, :, 1, 1] = 1.5                        # zeros revived (CSR structure changes)
    w[3] *= -2                                  # values change
    assert_matches_dense(conv(mode, x, w, bias, geo, engine), x, w, bias, geo)
    w[...] = 0                                  # all pruned
    np.testing.assert_array_equal(conv(mode, x, w, bias, geo, engine),
                                  np.broadcast_to(bias[None, :, None, None], (2, 4, 6, 6)))
    engine.invalidate()
    w[...] = 1
    assert_matches_dense(conv(mode, x, w, bias, geo, engine), x, w, bias, geo)


@pytest.mark.parametrize("mode", ["DIRECT_SCONV", "DIRECT_DCONV"])
@pytest.mark.parametrize("workers", [1, 3])
def test_direct_modes_rebuild_exactly_when_the_weights_csr_changes(mode, workers):
    """The direct modes check the weight against their CSR inside the kernel's workers, each
    on its own output channels: a change in any worker's rows is seen, and an unchanged
    weight (or one whose zeros only change sign) keeps its CSR."""
    from caffe_lite.kernels import direct_conv
    geo = ConvGeometry(3, 3, 1, 1, 1, 1, 1, 1, 1)
    x, w, bias = random_case(geo, (2, 3, 6, 6), 6, "elementwise", 0.4, 11)
    engine = conv_engine(mode)
    builds = []
    real = direct_conv._weights

    def counted(w2, keep_zeros):
        builds.append(1)
        return real(w2, keep_zeros)
    with mock.patch.object(direct_conv, "_weights", counted), \
            mock.patch.object(direct_conv, "SPLIT_MIN_MACS", 0), \
            mock.patch.object(threads, "get_num_threads", lambda: workers):
        def run():
            return conv(mode, x, w, bias, geo, engine)
        assert_matches_dense(run(), x, w, bias, geo)
        assert_matches_dense(run(), x, w, bias, geo)
        assert len(builds) == 1
        zero = np.flatnonzero(w.reshape(-1) == 0)
        w.reshape(-1)[zero[:3]] = -0.0                 # a zero's sign: the same CSR
        run()
        assert len(builds) == (1 if mode == "DIRECT_SCONV" else 2)
        before = len(builds)
        for flat in (zero[-1], w.size // 2, 0):          # the last, a middle and the first row
            w.reshape(-1)[flat] = 0.75 if w.reshape(-1)[flat] == 0 else 0
            assert_matches_dense(run(), x, w, bias, geo)
            assert len(builds) == before + 1
            before += 1
        nonzero = np.flatnonzero(w.reshape(-1))[-1]
        w.reshape(-1)[nonzero] = np.nextafter(w.reshape(-1)[nonzero], np.float32(np.inf))
        assert_matches_dense(run(), x, w, bias, geo)     # one bit of one value
        assert len(builds) == before + 1


def test_a_direct_layer_keeps_its_buffers_right_across_input_shapes():
    """The padded-input buffers are kept between calls, their padding zero: another input
    shape lays the padding elsewhere, so it gets new buffers."""
    geo = ConvGeometry(3, 3, 2, 1, 2, 1, 1, 1, 1)
    engine = conv_engine("DIRECT_SCONV")
    for shape in [(1, 3, 9, 9), (2, 3, 5, 11), (1, 3, 9, 9), (1, 3, 12, 7)]:
        x, w, bias = random_case(geo, shape, 4, "elementwise", 0.5, 3)
        assert_matches_dense(conv("DIRECT_SCONV", x, w, bias, geo, engine), x, w, bias, geo)


def test_weight_cache_rebuilds_exactly_when_a_bit_changes():
    built = []
    cache = WeightCache(lambda w: built.append(w.copy()) or len(built))
    w = np.array([[1.0, 0.0], [np.nan, 2.0]], np.float32)
    assert cache.get(w) == 1 and cache.get(w) == 1          # unchanged: NaN == NaN bitwise
    w[0, 1] = -0.0                                           # numerically equal, other bits
    assert cache.get(w) == 2
    assert cache.get(w.astype(np.float64)) == 3              # another dtype
    assert cache.get(w[:1]) == 4                             # another shape
    assert cache.get(np.asfortranarray(np.eye(2, dtype=np.float32))) == 5
    cache.invalidate()
    assert cache.get(np.eye(2, dtype=np.float32)) == 6
    w2 = np.eye(2, dtype=np.float32)
    assert cache.get(w2) == 6                                # same bits, another array
    assert built[-1] is not w2                               # it keeps its own copy


@pytest.mark.parametrize("mode,phase,warns", [
    ("LOWERED_CSRMM", TRAIN, True), ("DIRECT_SCONV", TRAIN, True), ("DIRECT_DCONV", TRAIN, True),
    ("LOWERED_CSRMM", TEST, False), ("LOWERED_CCNMM", TRAIN, False),
    ("LOWERED_GEMM", TRAIN, False)])
def test_modes_slower_to_train_say_so_in_train_phase(mode, phase, warns, caplog):
    text = ('name: "conv1" type: "Convolution" bottom: "x" top: "y" convolution_param { '
            f'num_output: 2 kernel_size: 1 conv_mode: {mode} }}')
    with caplog.at_level(logging.WARNING, logger="caffe_lite"):
        layer, _, _ = make_layer(text, [np.zeros((1, 2, 3, 3))], phase=phase)
    lines = [r.getMessage() for r in caplog.records if "conv_mode" in r.getMessage()]
    assert type(layer.engine) is CONV_ENGINES[mode]
    if warns:
        assert lines == [(f"layer 'conv1': conv_mode {mode} trains with its sparse forward and "
                          "Caffe's dense backward (exact gradients), slower than LOWERED_GEMM "
                          "until the weights are sparse; SSL trains with LOWERED_GEMM only")]
    else:
        assert lines == []


NET = '''name: "n" input: "x" input_shape { dim: 2 dim: 4 dim: 9 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2 %s
    weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
'''


@pytest.mark.parametrize("mode", MODES)
def test_a_net_runs_each_mode(tmp_path, mode):
    import caffe_lite as caffe
    outputs = []
    for text in (NET % f"conv_mode: {mode}", NET % ""):
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        net = caffe.Net(str(path), caffe.TEST)
        w = net.params["conv"][0].data
        w[...] = np.arange(w.size).reshape(w.shape) % 5 - 2      # a fifth of them zero
        net.params["conv"][1].data[...] = [1, -1, 2, 0, 0.5, 3]
        net.blobs["x"].data[...] = np.arange(2 * 4 * 81).reshape(2, 4, 9, 9) % 7 - 3
        outputs.append(net.forward()["y"].copy())
    # small integers: every sum is exact in float32, whatever its order
    np.testing.assert_array_equal(*outputs)


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("workers", [1, 3])
def test_compact_cache_rebuilds_exactly_when_the_compacted_form_changes(group, workers,
                                                                       monkeypatch):
    """CompactCache rebuilds when any entry leaves the compacted form: a dropped row or
    column gains a non-zero (NaN included), or a kept entry changes a bit (-0.0 against
    0.0 included); not when nothing changed, or when a dropped zero turns -0.0. With three
    workers the check's parts hold rows 0-1, 2-4 and 5-7: a change in each part is seen."""
    monkeypatch.setattr(sparse_conv_engines, "CHECK_PARALLEL_MIN", 0)
    monkeypatch.setattr(threads, "get_num_threads", lambda: workers)
    rng = np.random.default_rng(21)
    w = rng.standard_normal((8, 3, 2, 2)).astype(np.float32)
    w2 = w.reshape(8, -1)
    w2[:, ::3] = 0                      # dropped columns
    w2[5] = 0                           # a dropped row
    w2[1, 1] = 0                        # a zero inside the kept block
    builds = []
    cache = sparse_conv_engines.CompactCache(lambda w, kept: builds.append(kept) or len(builds),
                                             group)
    assert cache.get(w) == 1
    assert cache.get(w) == 1
    rows, cols, kept_w = builds[0][-1]              # the last group holds row 5
    assert 5 - (8 - 8 // group) not in rows
    np.testing.assert_array_equal(kept_w, w2[8 - 8 // group:][rows][:, cols])
    changes = [((5, 1), 1.0), ((0, 0), np.nan), ((2, 3), 1e-30), ((1, 1), 2.0),
               ((0, 1), None)]
    expected = 1
    for (r, c), value in changes:
        old = w2[r, c]
        w2[r, c] = np.float32(-w2[r, c]) if value is None else value
        expected += 1
        assert cache.get(w) == expected, (r, c, value)
        w2[r, c] = old
        expected += 1
        assert cache.get(w) == expected
    w2[0, 0] = np.float32(-0.0)         # a dropped zero's sign: the same form
    assert cache.get(w) == expected
