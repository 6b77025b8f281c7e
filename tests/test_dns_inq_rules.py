"""DNS and INQ rules (compress/dns.py, compress/inq.py) on hand-made arrays, and the layers'
masks, statistics, gradients and errors."""
import numpy as np
import pytest

from caffe_lite.common import TEST, TRAIN
from caffe_lite.compress import dns, inq
from caffe_lite.errors import CaffeError
from gradcheck import check_gradient, make_layer


# --- DNS rules ------------------------------------------------------------------------------

def test_statistics_pool_the_kept_non_zero_weights_and_biases():
    w = np.array([0.5, -1.0, 0.0, 3.0])
    wm = np.array([1.0, 1.0, 1.0, 0.0])         # 0.0 is not counted, 3.0 is masked off
    b = np.array([-2.0])
    bm = np.array([1.0])
    mu, std = dns.statistics([(w, wm), (b, bm)])
    kept = np.array([0.5, 1.0, 2.0])
    assert mu == pytest.approx(kept.mean())
    assert std == pytest.approx(kept.std())
    assert dns.statistics([(np.zeros(3), np.ones(3))]) == (0.0, 0.0)


@pytest.mark.parametrize("low,high", [(0.9, 1.1), (0.95, 1.05)])
def test_mask_update_has_hysteresis_around_the_threshold(low, high):
    t = 1.0
    a = np.array([0.5, low, low + 0.01, 0.99, 1.0, high, high + 0.01, 2.0])
    w = a * np.array([1, -1, 1, -1, 1, -1, 1, -1])
    kept = np.ones_like(w)
    dns.update_mask(w, kept, t, low, high)
    np.testing.assert_array_equal(kept, a > low)            # cut at |w| <= low * T
    cut = np.zeros_like(w)
    dns.update_mask(w, cut, t, low, high)
    np.testing.assert_array_equal(cut, a > high)            # spliced back at |w| > high * T


def test_threshold_is_clamped_at_zero():
    assert dns.threshold(0.1, 0.2, 3) == pytest.approx(0.7)
    assert dns.threshold(0.1, 0.2, -1) == 0.0


def test_update_probability_schedule():
    assert dns.update_probability(1e-4, 1, 0) == 1.0
    assert dns.update_probability(1e-4, 1, 10000) == pytest.approx(0.5)
    assert dns.update_probability(1e-3, 2, 1000) == pytest.approx(0.25)
    assert dns.should_update(1e-4, 1, 100, 99, 0.5)
    assert not dns.should_update(1e-4, 1, 100, 100, 0.0)        # iter_stop reached
    assert not dns.should_update(1e-4, 1, 10 ** 6, 10000, 0.5)  # p = 0.5 is not > 0.5
    assert dns.should_update(1e-4, 1, 10 ** 6, 10000, 0.49)


# --- INQ rules ------------------------------------------------------------------------------

def test_nnmc_quantizes_the_largest_portion_to_powers_of_two():
    w = np.array([0.9, -0.5, 0.3, 0.05, -0.02, 0.2, -0.11, 0.01], np.float32)
    mask = np.ones_like(w)
    # n1 = floor(log2(4/3 * 0.9)) = 0; 3 exponents: {0, +-1/4, +-1/2, +-1}
    n1, n2, done = inq.nnmc_quantize(w, mask, 0.0, 0.5, 3)
    assert (n1, n2, done) == (0, -2, 4)
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 0, 1, 1])
    # 0.9 -> 1 (>= 0.75), 0.5 -> 0.5, 0.3 -> 0.25, 0.2: e = floor(log2(0.2667)) = -2 -> 0.25
    np.testing.assert_array_equal(w[mask == 0], np.float32([1.0, -0.5, 0.25, 0.25]))
    np.testing.assert_array_equal(w[mask == 1], np.float32([0.05, -0.02, -0.11, 0.01]))
    # next step 50% -> 100%: n1 from the quantized values (round(log2 1) = 0)
    n1, n2, done = inq.nnmc_quantize(w, mask, 0.5, 1.0, 3)
    assert (n1, n2, done) == (0, -2, 4)
    assert not mask.any()
    # below 0.75 * 2^-2 = 0.1875 everything is 0 (NNMC's zero threshold)
    np.testing.assert_array_equal(w, np.float32([1.0, -0.5, 0.25, 0, 0, 0.25, 0, 0]))


def test_nnmc_counts_estimate_the_original_size():
    mask = np.array([0, 0, 0] + [1] * 7, np.float32)
    assert inq.nnmc_counts(mask, 0.3, 0.6) == (3, 4)       # U0 = 10, 4 stay float
    assert inq.nnmc_counts(mask, 0.3, 0.3) == (0, 7)


def test_nnmc_all_zero_blob_stays_zero():
    b = np.zeros(4, np.float32)
    mask = np.ones_like(b)
    inq.nnmc_quantize(b, mask, 0.0, 1.0, 7)
    assert not b.any() and not mask.any()


def test_official_rule_rounds_to_the_nearest_power_with_a_midpoint_zero():
    # max 1.0: n1 = 0, eight exponents 2^-7 .. 2^0
    w = np.array([1.0, 0.74, 0.76, -0.3, 2 ** -8 * 1.01, 2 ** -8 * 0.99, 0.0, 0.1],
                 np.float32)
    before = w.copy()
    mask = inq.official_quantize(w, 1.0)
    assert not mask.any()
    want = [1.0, 0.5, 1.0, -0.25, 2 ** -7, 0.0, 0.0, 0.125]
    np.testing.assert_array_equal(w, np.float32(want))
    # 30%: int(8 * 0.7) - 1 = 4, the entries at or above the 5th smallest |w| (0.3)
    w = before.copy()
    mask = inq.official_quantize(w, 0.3)
    np.testing.assert_array_equal(mask == 0, np.abs(before) >= 0.3)
    np.testing.assert_array_equal(w[mask == 1], before[mask == 1])


def test_power_of_two_report():
    assert inq.power_of_two_report(np.float32([0, 0.5, -0.25, 4])) == (True, [-2, -1, 2])
    assert inq.power_of_two_report(np.float32([0.5, 0.3])) == (False, [-1])
    assert inq.power_of_two_report(np.zeros(3)) == (True, [])


# --- layers ---------------------------------------------------------------------------------

def ip(kind, extra="", bias=True):
    field = {"CInnerProduct": "cinner_product_param", "DNSInnerProduct":
             "dns_inner_product_param", "INQInnerProduct": "inq_inner_product_param"}[kind]
    return (f'name: "ip" type: "{kind}" bottom: "x" top: "y" '
            f"inner_product_param {{ num_output: 3 bias_term: {str(bias).lower()} }} "
            f"{field} {{ {extra} weight_mask_filler {{ type: 'constant' value: 1 }} "
            f"bias_mask_filler {{ type: 'constant' value: 1 }} }}")


def conv(kind, extra=""):
    field = {"CConvolution": "cconvolution_param", "DNSConvolution": "dns_convolution_param",
             "INQConvolution": "inq_convolution_param"}[kind]
    return (f'name: "c" type: "{kind}" bottom: "x" top: "y" convolution_param {{ '
            f"num_output: 4 kernel_size: 3 pad: 1 }} {field} {{ {extra} "
            f"weight_mask_filler {{ type: 'constant' value: 1 }} "
            f"bias_mask_filler {{ type: 'constant' value: 1 }} }}")


@pytest.mark.parametrize("kind,low,high", [("CInnerProduct", 0.9, 1.1),
                                           ("DNSInnerProduct", 0.95, 1.05)])
def test_layer_defaults_give_each_versions_hysteresis(kind, low, high):
    layer, bottom, top = make_layer(ip(kind, "gamma: 0 c_rate: 0"), [np.ones((2, 4))],
                                    dtype=np.float32)
    assert len(layer.blobs) == 4 and layer.state_blobs == {2, 3}
    w = layer.blobs[0].data
    w[...] = 1.0
    layer.blobs[1].data[...] = 1.0
    layer.statistics = (1.0, 0.0)                    # T = 1 with c_rate 0
    w[0, :] = [low, low + 0.01, high, high + 0.01]
    layer.forward(bottom, top)
    np.testing.assert_array_equal(layer.blobs[2].data[0], [0, 1, 1, 1])
    layer.blobs[2].data[0] = 0
    layer.forward(bottom, top)
    np.testing.assert_array_equal(layer.blobs[2].data[0], [0, 0, 0, 1])


def test_dns_forward_uses_masked_weights_and_test_phase_keeps_masks():
    x = np.random.default_rng(0).standard_normal((2, 4))
    layer, bottom, top = make_layer(ip("DNSInnerProduct"), [x], phase=TEST)
    rng = np.random.default_rng(1)
    for b in layer.blobs[:2]:
        b.data[...] = rng.standard_normal(b.shape)
    layer.blobs[2].data[...] = rng.integers(0, 2, layer.blobs[2].shape)
    masks = [b.data.copy() for b in layer.blobs[2:]]
    layer.forward(bottom, top)
    want = x @ (layer.blobs[0].data * layer.blobs[2].data).T + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, want)
    for b, m in zip(layer.blobs[2:], masks):
        np.testing.assert_array_equal(b.data, m)
    assert layer.statistics is None


@pytest.mark.parametrize("kind", ["CConvolution", "DNSConvolution", "CInnerProduct",
                                  "DNSInnerProduct"])
def test_dns_gradients_bottom_through_masks_and_dense_weight_gradient(kind):
    rng = np.random.default_rng(2)
    text = conv(kind) if "Conv" in kind else ip(kind)
    x = rng.standard_normal((2, 2, 5, 5) if "Conv" in kind else (2, 4))
    layer, bottom, top = make_layer(text, [x], phase=TEST)
    for b in layer.blobs[:2]:
        b.data[...] = rng.standard_normal(b.shape)
    layer.blobs[2].data[...] = rng.integers(0, 2, layer.blobs[2].shape)
    check_gradient(layer, bottom, top, check_params=False)
    # the weight gradient is the plain layer's at the masked weights, for cut entries too
    plain_type = "Convolution" if "Conv" in kind else "InnerProduct"
    plain_text = text.replace(f'type: "{kind}"', f'type: "{plain_type}"')
    plain_text = plain_text[:plain_text.index("} ") + 1]      # without the DNS field
    plain, pb, pt = make_layer(plain_text, [x], phase=TEST)
    plain.blobs[0].data[...] = layer.blobs[0].data * layer.blobs[2].data
    plain.blobs[1].data[...] = layer.blobs[1].data * layer.blobs[3].data
    for lay, (b, t) in ((layer, (bottom, top)), (plain, (pb, pt))):
        lay.forward(b, t)
        t[0].diff[...] = 1.0
        for blob in lay.blobs:
            blob.diff[...] = 0
        lay.backward(t, [True], b)
    for i in (0, 1):
        np.testing.assert_allclose(layer.blobs[i].diff, plain.blobs[i].diff)
    assert not layer.blobs[2].diff.any()


def test_inq_layer_quantizes_once_at_iteration_zero_in_train():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4))
    layer, bottom, top = make_layer(ip("INQInnerProduct", "portion: 0 portion: 0.5 "
                                       "num_quantum_values: 5"), [x], dtype=np.float32)
    for b in layer.blobs[:2]:
        b.data[...] = rng.standard_normal(b.shape)
    layer.set_iteration(3)
    layer.forward(bottom, top)
    assert layer.blobs[2].data.all()                 # a resumed run does not quantize
    layer.set_iteration(0)
    layer.forward(bottom, top)
    assert (layer.blobs[2].data == 0).sum() == 6
    ok, _ = inq.power_of_two_report(layer.blobs[0].data[layer.blobs[2].data == 0])
    assert ok
    frozen = layer.blobs[0].data.copy()
    layer.forward(bottom, top)                       # once only
    np.testing.assert_array_equal(layer.blobs[0].data, frozen)


@pytest.mark.parametrize("portion,message", [
    ("portion: 0.5", "give portion twice"),
    ("portion: 0.6 portion: 0.5", "portion[0] <= portion[1]"),
    ("portion: 0 portion: 1.5", "<= 1"),
])
def test_inq_portion_errors_are_one_line(portion, message):
    with pytest.raises(CaffeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_layer(ip("INQInnerProduct", portion), [np.ones((2, 4))])


def test_bias_less_masked_layer_has_one_mask():
    layer, bottom, top = make_layer(ip("DNSInnerProduct", bias=False), [np.ones((2, 4))],
                                    phase=TRAIN)
    assert len(layer.blobs) == 2 and layer.state_blobs == {1}
    layer.forward(bottom, top)


# --- stored size ----------------------------------------------------------------------------

def test_relative_indices_need_a_filler_entry_per_16_skipped_zeros():
    from caffe_lite.compress import stored_size
    w = np.zeros(60, np.float32)
    w[[0, 15, 16, 49]] = 1.0          # gaps 0, 14, 0, 32 zeros: the last needs 2 fillers
    assert stored_size.relative_index_entries(w) == 4 + 2
    w[59] = 1.0                       # gap 9
    assert stored_size.relative_index_entries(w) == 5 + 2
    assert stored_size.relative_index_entries(np.zeros(5)) == 0


def test_values_take_four_bits_only_when_all_are_powers_of_two_in_fifteen_codes():
    from caffe_lite.compress import stored_size
    seven = np.float32([2.0 ** -k for k in range(7)] + [-(2.0 ** -k) for k in range(7)] + [0])
    assert stored_size.value_bits(seven) == 4                   # 14 signed powers and 0
    eight = np.float32([2.0 ** -k for k in range(8)] + [-1.0])
    assert stored_size.value_bits(eight) == 32                  # 16 signed codes + 0
    assert stored_size.value_bits(np.float32([0.3, 0.5])) == 32
    assert stored_size.stored_bits(seven) == 14 * (4 + 4)


@pytest.mark.parametrize("kind", ["INQConvolution", "INQInnerProduct"])
def test_inq_gradients_are_the_plain_layers(kind):
    rng = np.random.default_rng(4)
    text = (conv(kind, "portion: 0 portion: 0.5") if "Conv" in kind
            else ip(kind, "portion: 0 portion: 0.5"))
    x = rng.standard_normal((2, 2, 5, 5) if "Conv" in kind else (2, 4))
    layer, bottom, top = make_layer(text, [x], phase=TEST)
    for b in layer.blobs[:2]:
        b.data[...] = rng.standard_normal(b.shape)
    check_gradient(layer, bottom, top, check_params=[0, 1])
    assert layer.blobs[2].data.all()        # TEST never quantizes
