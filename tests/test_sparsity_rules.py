"""caffe-jacinto's sparsity rules (compress/sparsity.py) on hand-made arrays.

The expected values are worked out by hand in the comments; the searches are also checked
bit for bit against a naive transcription of TI's C++ loops (one float32 candidate at a
time, as net.cpp's FindAndApplyThresholdNet / FindAndApplyChannelThresholdNet run them).
"""
import numpy as np
import pytest

from caffe_lite.compress import sparsity as sp
from caffe_lite.errors import CaffeError

F = np.float32


# --- an oracle: TI's loops, one candidate at a time ----------------------------------------

def _count(a, t):
    return F(np.count_nonzero(a <= t))


def ti_layer_threshold(w, frac, ratio, vmax, step_factor):
    a = np.abs(np.asarray(w, F)).ravel()
    n, top = F(a.size), F(a.max())
    step = F(top * F(step_factor))
    cap = min(F(vmax), F(top * F(ratio)))
    coarse_step, coarse, t = F(step * F(100)), F(0), F(0)
    while t < top and t < cap:
        if _count(a, t) / n <= F(frac):
            coarse = t
        else:
            break
        t = F(t + coarse_step)
    best, t = F(0), max(F(coarse - coarse_step), F(0))
    while t < F(coarse + coarse_step) and t < top and t < cap:
        if _count(a, t) / n <= F(frac):
            best = t
        else:
            break
        t = F(t + step)
    return best


def ti_channel_thresholds(w, frac, ratio, vmax, step_factor):
    out = []
    for channel in np.asarray(w, F):
        a = np.abs(channel).ravel()
        n, top = F(a.size), F(a.max())
        step = F(top * F(step_factor))
        cap = min(min(F(vmax), F(top * F(ratio))), top)
        best = F(0)
        for search_iter, g in enumerate((1000, 100, 10, 1)):
            g_step = F(step * F(g))
            reach = F(F(g_step * F(10)) * F(2))
            lo = max(F(best - reach), F(0)) if search_iter else F(0)
            hi = F(best + reach) if search_iter else cap
            t = lo
            while t < hi and t < cap:
                if _count(a, t) / n <= F(frac):
                    best = t
                else:
                    break
                t = F(t + g_step)
        out.append(best)
    return np.array(out, F)


# --- zero test -----------------------------------------------------------------------------

def test_zero_test_is_inclusive_and_zeroes_to_plus_zero():
    w = np.array([-0.5, -0.1, 0.0, 0.1, 0.2], F)
    assert sp.zero_mask(w, 0.1).tolist() == [False, True, True, True, False]
    assert sp.zero_count(w, 0.1) == 3
    assert sp.zero_fraction(w, 0.1) == float(F(3) / F(5))
    assert sp.zero_fraction(w) == float(F(1) / F(5))
    out = sp.zero_out(w, 0.1)
    np.testing.assert_array_equal(out, np.array([-0.5, 0, 0, 0, 0.2], F))
    assert not np.signbit(out[1])            # -0.1 becomes +0, as caffe_cpu_zerout's 0
    assert w[1] == F(-0.1)                   # a copy unless asked to work in place
    sp.zero_out(w, 0.1, out=w)
    assert w.tolist() == out.tolist()


# --- eligibility and fractions --------------------------------------------------------------

@pytest.mark.parametrize("shape, group, expected", [
    # (no, ni/group, kh, kw): layer 0.15, layer 0.16, channel 0.15, channel 0.16, channel 0.17
    ((16, 3, 3, 3), 1, (False, False, False, False, False)),   # ni = 3, no = 16
    ((32, 3, 3, 3), 1, (True, True, True, True, True)),        # no = 32
    ((8, 32, 3, 3), 1, (True, True, True, True, True)),        # ni = 32
    ((32, 1, 3, 3), 32, (True, False, True, False, False)),    # depthwise: group == no
    ((64, 64, 1, 1), 1, (True, True, True, False, False)),     # 1x1
    ((64, 64, 3, 2), 1, (True, True, True, False, False)),     # a kernel dim of 2
    ((64, 32, 3, 3), 2, (True, True, True, True, True)),       # grouped, group < no
])
def test_eligibility_by_search_and_vintage(shape, group, expected):
    keys = [("layer", "0.15"), ("layer", "0.16"), ("channel", "0.15"), ("channel", "0.16"),
            ("channel", "0.17")]
    conv = sp.conv_shape(shape, group)
    assert conv.ni == shape[1] * group and conv.no == shape[0]
    got = tuple(sp.ineligible_reason(conv, sp.eligibility(*k)) is None for k in keys)
    assert got == expected


def test_unknown_vintage_is_an_error():
    with pytest.raises(CaffeError, match="0.17.*known: 0.15, 0.16"):
        sp.eligibility("layer", "0.17")


@pytest.mark.parametrize("ni, no, which", [
    (256, 512, "high"), (255, 512, "mid"), (256, 511, "mid"), (32, 32, "mid"),
    (31, 512, "low"), (512, 31, "low"),
])
def test_target_fraction_low_mid_high(ni, no, which):
    shape = sp.ConvShape(ni, no, 1, 3, 3)
    assert sp.target_fraction(shape, "low", "mid", "high") == which


def test_measured_layers_skip_a_conv_before_softmax_in_the_list():
    types = ["Input", "Convolution", "ReLU", "Convolution", "SoftmaxWithLoss", "Convolution",
             "Softmax", "Convolution"]
    assert sp.measured_layers(types) == [1, 7]


# --- layer-wise search ---------------------------------------------------------------------

# ten magnitudes; with step factor 1e-3 and max |w| = 1: s = 0.001, coarse step 0.1
TEN = np.array([1.0, -0.05, 0.12, -0.25, 0.33, 0.5, -0.61, 0.7, 0.8, -0.9], F)


def test_layer_threshold_by_hand():
    # at most 3 of 10 zeros (3/10 <= 0.3 passes: the test is <=): coarse keeps 0.3 (3 zeros)
    # and stops at 0.4 (4); the fine pass from 0.2 by 0.001 keeps the last t below 0.33
    t = sp.layer_threshold(TEN, 0.3, 1.0, 1.0, 1e-3)
    assert F(0.33) - F(0.001) * F(1.01) <= t < F(0.33)
    assert t == ti_layer_threshold(TEN, 0.3, 1.0, 1.0, 1e-3)
    out = sp.zero_out(TEN, t)
    assert np.flatnonzero(out == 0).tolist() == [1, 2, 3]


def test_layer_threshold_is_capped_by_maxratio_and_value_max():
    # cap = min(1, 0.2 * 1) = 0.2: coarse stops before 0.2, the fine pass ends just below it
    t = sp.layer_threshold(TEN, 0.9, 0.2, 1.0, 1e-3)
    assert F(0.2) - F(0.001) * F(1.01) <= t < F(0.2)
    assert sp.zero_count(sp.zero_out(TEN, t)) == 2               # 0.05 and 0.12
    # cap = min(0.15, 1 * 1) = 0.15
    t = sp.layer_threshold(TEN, 0.9, 1.0, 0.15, 1e-3)
    assert F(0.15) - F(0.001) * F(1.01) <= t < F(0.15)


def test_layer_threshold_zero_when_the_first_candidate_fails():
    # 3 exact zeros out of 4 already exceed the fraction 0.5 at t = 0
    w = np.array([0, 0, 0, 1], F)
    assert sp.layer_threshold(w, 0.5, 1.0, 1.0, 1e-3) == 0
    assert sp.layer_threshold(np.zeros(5, F), 0.5, 1.0, 1.0, 1e-3) == 0


# --- channel-wise search -------------------------------------------------------------------

def test_channel_thresholds_by_hand():
    # channel 0 as TEN (max 1), channel 1 twice as large (max 2), channel 2 all zero.
    # Fraction 0.3: at most 3 zeros per channel, so the threshold lands just below the 4th
    # magnitude (0.33 * max), on the finest grid max * 1e-5.
    w = np.stack([TEN, 2 * TEN, np.zeros(10, F)]).reshape(3, 10, 1, 1)
    t = sp.channel_thresholds(w, 0.3, 1.0, 10.0, 1e-5)
    for c, top in ((0, 1.0), (1, 2.0)):
        assert F(0.33 * top) - F(top * 1e-5) * F(1.01) <= t[c] < F(0.33) * F(top)
    assert t[2] == 0
    np.testing.assert_array_equal(t, ti_channel_thresholds(w, 0.3, 1.0, 10.0, 1e-5))
    out = sp.apply_channel_thresholds(w, t).reshape(3, 10)
    assert [np.flatnonzero(row == 0).tolist() for row in out[:2]] == \
        [[1, 2, 3], [1, 2, 3]]


def test_channel_threshold_cap_includes_the_channel_max():
    # value_max and maxratio allow more than max |w|: TI caps at max |w| itself, so
    # the largest entry is never zeroed even with fraction 1
    w = np.array([[0.5, -1.0, 0.25, 0.75]], F)
    t = sp.channel_thresholds(w, 1.0, 5.0, 5.0, 1e-4)
    assert t[0] < 1.0
    np.testing.assert_array_equal(sp.apply_channel_thresholds(w, t), [[0, -1, 0, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("frac", [0.1, 0.45, 0.8])
def test_searches_match_ti_loops_bit_for_bit(seed, frac):
    # float32 running sums differ from k * s in the last bits: the thresholds must be
    # exactly the sums TI's loops reach
    w = (np.random.default_rng(seed).standard_normal((4, 3, 3, 3)) * 0.1).astype(F)
    np.testing.assert_array_equal(sp.channel_thresholds(w, frac, 0.2, 0.2, 1e-6),
                                  ti_channel_thresholds(w, frac, 0.2, 0.2, 1e-6))
    for args in ((0.2, 0.2, 1e-6), (1e-3, 1e-4, 1e-8), (0.5, 1.0, 1e-4)):
        assert sp.layer_threshold(w, frac, *args) == ti_layer_threshold(w, frac, *args)


def test_a_step_too_small_is_an_error_not_a_hang():
    with pytest.raises(CaffeError, match="too small"):
        sp.layer_threshold(TEN, 0.3, 1.0, 1.0, 1e-12)
    with pytest.raises(CaffeError, match="step factor must be > 0"):
        sp.channel_thresholds(TEN.reshape(1, 10), 0.3, 1.0, 1.0, 0)


def test_threshold_conv_in_place_or_with_the_reason_it_skips():
    w = np.tile(TEN, (32, 1)).reshape(32, 10, 1, 1)      # no = 32, 1x1
    rules = sp.eligibility("layer", "0.16")
    done, reason = sp.threshold_conv(w, 1, (0.3, 0.9, 0.9), 1.0, 1.0, 1e-3, rules,
                                     channel_wise=False, out=w)
    assert reason is None and done.fraction == 0.3 and done.max_abs == 1.0
    assert done.zero_fraction == float(F(96) / F(320))   # 3 of every 10 zeroed in place
    assert sp.zero_count(w) == 96
    skipped, reason = sp.threshold_conv(w, 1, (0.3, 0.9, 0.9), 1.0, 1.0, 1e-3,
                                        sp.eligibility("channel", "0.16"), channel_wise=True)
    assert skipped is None and reason == "kernel 1x1 smaller than 3x3"


# --- the G3 schedule -----------------------------------------------------------------------

def test_g3_factor_cap_and_fractions():
    assert sp.g3_factor_max(0.5) == F(0.65)
    assert sp.g3_factor_max(0.9) == F(0.95)
    assert sp.g3_fractions(0.5) == (F(0.25), F(0.5), F(0.5))


@pytest.mark.parametrize("seen, factor, measured, target, due", [
    (1000, 0.5, 0.1, 0.5, True),
    (999, 0.5, 0.1, 0.5, False),          # not a multiple of step_iter
    (500, 0.5, 0.1, 0.5, False),          # before start_iter
    (1000, 0.65, 0.1, 0.5, True),         # factor == min(target + 0.15, 0.95): inclusive
    (1000, 0.66, 0.1, 0.5, False),
    (1000, 0.5, 0.5, 0.5, False),         # measured sparsity reached the target
    (1000, 0.5, float("nan"), 0.5, False),  # nothing measured: TI's 0/0
    (1000, 0.0, 0.0, 0.0, False),         # no target
])
def test_g3_pass_due(seen, factor, measured, target, due):
    assert sp.g3_pass_due(seen, factor, measured, target, start_iter=1000, step_iter=500) \
        is due
