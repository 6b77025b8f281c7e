"""caffe-jacinto's dynamic fixed point (compress/fixed_point.py) on tiny hand-computed cases:
integer and fractional lengths, Q-B/Q-C scales and shifts, C rounding, clamping, the three
range averages and the unbiasedness of stochastic rounding."""
import math

import numpy as np
import pytest

from caffe_lite.compress import fixed_point as fp
from caffe_lite.kernels import neuron

F32 = np.float32
EPS32 = float(np.finfo(np.float32).eps)


def q(values, qscale, **kw):
    return fp.fake_quantize(np.asarray(values, np.float32), qscale, **kw)


# --- lengths --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, bits", [(1.0, 0), (0.75, 0), (0.5, -1), (3.0, 2), (4.0, 2),
                                         (4.5, 3), (-6.0, 3), (0.0, 0)])
def test_abs_bits_is_ceil_log2(value, bits):
    assert fp.abs_bits(value) == bits


def test_qa_activation_length_signed_and_unsigned():
    # max|x| = 2.5 needs 2 integer bits; a sign bit unless the range is checked unsigned
    assert fp.qa_activation_length(-0.3, 2.5, True) == (3, False)
    assert fp.qa_activation_length(0.0, 2.5, True) == (2, True)
    assert fp.qa_activation_length(0.0, 2.5, False) == (3, False)
    assert fp.qa_activation_length(-6.0, 1.0, True) == (4, False)


def test_qa_weight_length_reads_the_max_only():
    # TI's GetIntegerLengthWeights: ceil(log2 0.2) + 1 = -1, so 8 bits give fl 9 and the
    # format holds [-0.25, 0.248]: a weight of -0.9 is clamped (TI's behaviour, kept)
    il = fp.qa_weight_length(0.2)
    assert il == -1
    qs = fp.qa_scale(8, 8 - il, False)
    assert q([-0.9, 0.2], qs).tolist() == [-0.25, 102 / 512]     # 0.2 * 512 = 102.4


# --- Q-A fake quantization -------------------------------------------------------------------
def test_qa_signed_nearest_rounds_half_away_from_zero_and_clamps():
    qs = fp.qa_scale(8, 5, False)          # steps of 1/32, codes -128..127
    x = [0.3, -0.3, 1.0, 3.99, -4.5, 1 / 64, -1 / 64, 5 / 64]
    # 9.6 -> 10; 127.68 -> 127; -144 -> -128; 0.5 -> 1; -0.5 -> -1; 2.5 -> 3 (not 2)
    want = [10 / 32, -10 / 32, 1.0, 127 / 32, -4.0, 1 / 32, -1 / 32, 3 / 32]
    assert q(x, qs).tolist() == pytest.approx(want, abs=0)


def test_nearest_is_c_round_on_the_float_just_below_a_half():
    qs = fp.qa_scale(8, 0, False)
    just_below = np.nextafter(F32(0.5), F32(0))        # 0.49999997: 0.5 + x rounds to 1.0
    assert q([just_below, -just_below, 2.5], qs).tolist() == [0.0, 0.0, 3.0]


def test_qa_unsigned_clamps_negatives_to_zero():
    qs = fp.qa_scale(8, 6, True)           # codes 0..255, steps of 1/64
    assert q([-0.1, 3.99, 5.0, 1.0], qs).tolist() == [0.0, 255 / 64, 255 / 64, 1.0]


def test_bias_is_not_clamped():
    qs = fp.qa_scale(8, 5, False)
    assert q([10.0, 0.3], qs, clip=False).tolist() == [10.0, 10 / 32]
    assert q([10.0], qs, clip=True).tolist() == [127 / 32]


def test_in_place_and_contiguity():
    qs = fp.qa_scale(4, 2, False)
    x = np.array([[0.3, -0.7], [2.0, 9.0]], np.float32)
    out = fp.fake_quantize(x, qs, out=x)
    assert out is x and x.tolist() == [[0.25, -0.75], [1.75, 1.75]]
    with pytest.raises(ValueError):
        fp.fake_quantize(np.zeros((4, 4), np.float32)[:, :2], qs)


def test_integer_codes_are_what_snapshot_log_stores():
    qs = fp.qa_scale(8, 5, False)
    assert fp.integer_codes([0.3, -4.5, 10.0, 1 / 64], qs).tolist() == [10, -128, 127, 1]
    assert fp.integer_codes([0.3, -4.5, 10.0], qs, clip=False).tolist() == [10, -144, 320]


# --- Q-B / Q-C scales -------------------------------------------------------------------------
def test_qc_signed_scale_maps_max_abs_onto_127_levels():
    qs = fp.estimate_qscale(-2.0, 1.0, 8, power2=False, apply_offset=False)
    assert (qs.scale, qs.offset, qs.unsigned_quant, qs.shiftbits) == (63.5, 0.0, False, 0)
    inv = F32(1) / F32(63.5)
    # 1.0 -> 63.5 -> 64 (half away); -3 -> -190.5 -> clamp -128
    want = [F32(64) * inv, F32(-128) * inv, 0.0]
    assert q([1.0, -3.0, 0.0], qs).tolist() == [float(w) for w in want]


def test_qc_unsigned_scale_uses_255_levels():
    qs = fp.estimate_qscale(0.0, 3.0, 8, power2=False, apply_offset=False)
    assert qs.scale == 85.0 and qs.unsigned_quant and qs.offset == 0.0
    assert q([1.0, -1.0, 4.0], qs).tolist() == [1.0, 0.0, 3.0]


def test_qc_offset_makes_the_range_unsigned():
    qs = fp.estimate_qscale(-1.0, 3.0, 8, power2=False, apply_offset=True)
    # scale 255 / 4 = 63.75, offset 63.75: -1 -> code 0, 3 -> code 255, 0 -> 63.75 -> 64
    assert (qs.scale, qs.offset, qs.unsigned_quant, qs.unsigned_data) == \
        (63.75, 63.75, True, False)
    inv, off = F32(1) / F32(63.75), F32(63.75)
    back = [float((F32(code) - off) * inv) for code in (0, 255, 64, 255)]   # float32, as TI
    assert q([-1.0, 3.0, 0.0, 5.0], qs).tolist() == back
    assert back[0] == -1.0 and abs(back[1] - 3.0) <= 2 * EPS32 * 3


@pytest.mark.parametrize("lo, hi, offset, shift, scale", [
    (-3.0, 2.5, False, -5, 32.0),      # ceil(log2 3) + 1 sign bit = 3 bits; 3 - 8 = -5
    (0.0, 2.5, False, -6, 64.0),       # unsigned: 2 bits
    (-1.0, 3.0, True, -6, 64.0),       # offset: bits of the span 4 = 2
    (-40.0, 100.0, False, 0, 1.0),     # 7 + 1 bits fill 8: scale 1
    (-300.0, 100.0, False, 2, 0.25),   # 9 + 1 bits: a right shift by 2
])
def test_power_of_two_shift(lo, hi, offset, shift, scale):
    qs = fp.estimate_qscale(lo, hi, 8, power2=True, apply_offset=offset)
    assert (qs.shiftbits, qs.fracbits, qs.scale) == (shift, -shift, scale)


def test_power_of_two_with_offset_clamps_at_255():
    qs = fp.estimate_qscale(-1.0, 3.0, 8, power2=True, apply_offset=True)
    assert qs.offset == 64.0
    assert q([-1.0, 3.0, 0.5], qs).tolist() == [-1.0, (255 - 64) / 64, 0.5]


def test_zero_range_keeps_the_value():
    for offset in (False, True):
        qs = fp.estimate_qscale(0.25, 0.25, 8, power2=False, apply_offset=offset)
        assert np.isfinite(qs.scale)
        assert q([0.25], qs).tolist() == [0.25]


# --- ranges -----------------------------------------------------------------------------------
def test_qa_range_average_from_zero():
    beta = F32(1) - F32(0.99)                  # TI's Dtype arithmetic: 0.00999999
    one = fp.qa_range_update(0.0, 2.0)
    assert one == F32(F32(2.0) * beta)
    two = fp.qa_range_update(one, 2.0)
    assert abs(float(two) - 2.0 * (1 - 0.99 ** 2)) <= 4 * EPS32 * 2.0


def test_qc_range_first_sample_then_update_factor():
    first = fp.qc_range_update(123.0, 2.0, True, 0.01, 1.25)
    assert first == F32(2.5)                    # weight 1 on the first, expanded by 1.25
    nxt = fp.qc_range_update(first, 4.0, False, 0.01, 1.25)
    assert abs(float(nxt) - (2.5 * 0.99 + 5.0 * 0.01)) <= 4 * EPS32 * 2.525
    arr = fp.qc_range_update(np.array([1.0, -2.0]), np.array([2.0, -2.0]), True, 0.5, 2.0)
    assert arr.dtype == np.float32 and arr.tolist() == [4.0, -4.0]


def test_qb_range_warm_up_then_average():
    assert fp.qb_range_update(7.0, 3.0, True, False) == F32(6.0)
    later = fp.qb_range_update(6.0, 5.0, False, False)
    assert abs(float(later) - 6.0) <= 4 * EPS32 * 6.0       # 0.9 * 6 + 0.1 * 1.2 * 5
    later_p2 = fp.qb_range_update(6.0, 5.0, False, True)
    assert abs(float(later_p2) - 5.9) <= 4 * EPS32 * 6.0    # no expansion with power2_range


def test_blob_range():
    assert fp.blob_range(np.array([[3.0, -1.0], [2.0, 0.5]], np.float32)) == (-1.0, 3.0)
    assert fp.blob_range(np.zeros((0, 3), np.float32)) == (0.0, 0.0)


# --- stochastic rounding -----------------------------------------------------------------------
def test_stochastic_rounding_is_unbiased():
    n = 200_000
    x = np.full(n, 0.3, np.float32)
    got = q(x, fp.qa_scale(8, 0, False), rounding=fp.STOCHASTIC, rng=np.random.default_rng(3))
    assert set(np.unique(got).tolist()) == {0.0, 1.0}
    # each draw is Bernoulli(0.3): the mean is within 5 standard deviations of 0.3
    assert abs(got.mean() - 0.3) <= 5 * math.sqrt(0.3 * 0.7 / n)


def test_stochastic_rounding_of_mixed_fractions_lands_on_neighbours():
    rng = np.random.default_rng(11)
    x = rng.uniform(-3, 3, 100_000).astype(np.float32)
    qs = fp.qa_scale(8, 2, False)           # steps of 0.25
    got = q(x, qs, rounding=fp.STOCHASTIC, rng=rng)
    lower = np.floor(x.astype(np.float64) * 4) / 4
    assert np.all((got == lower) | (got == lower + 0.25))
    frac = x.astype(np.float64) * 4 - np.floor(x.astype(np.float64) * 4)
    bound = 5 * 0.25 * math.sqrt((frac * (1 - frac)).sum()) / x.size
    assert abs((got - x.astype(np.float64)).mean()) <= bound


def test_stochastic_rounding_is_the_same_on_any_number_of_threads(monkeypatch):
    # each element's draw depends on (seed, index) only, so a split over threads changes
    # nothing
    n = neuron.PARALLEL_MIN * 2 + 5
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    qs = fp.qa_scale(8, 4, False)
    monkeypatch.setattr(neuron.threads, "get_num_threads", lambda: 3)
    split = q(x, qs, rounding=fp.STOCHASTIC, rng=np.random.default_rng(5))
    monkeypatch.setattr(neuron.threads, "get_num_threads", lambda: 1)
    whole = q(x, qs, rounding=fp.STOCHASTIC, rng=np.random.default_rng(5))
    assert np.array_equal(split, whole)


def test_stochastic_rounding_needs_a_generator():
    with pytest.raises(ValueError):
        q([0.5], fp.qa_scale(8, 0, False), rounding=fp.STOCHASTIC)
