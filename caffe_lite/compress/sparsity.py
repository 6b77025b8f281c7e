"""caffe-jacinto's sparsity rules as pure functions over weight arrays and layer specs.

What TI's code does (tidsp/caffe-jacinto, src/caffe/net.cpp and solver.cpp; FORK_FIELDS.md
1.3 and 2), and so what these functions do:

Zero test. Everywhere in TI a weight counts as zero when |w| <= t, inclusive
(caffe_cpu_count_zero, caffe_cpu_zerout); zeroing writes +0.

Eligibility of a Convolution for thresholding. ni = weight.shape[1] * group (all input
channels), no = weight.shape[0]. Every version needs ni >= 32 or no >= 32; later ones add
rules, kept as data below (ELIGIBILITY):
  layer-wise  (FindAndApplyThresholdNet, `caffe threshold`)  0.15: nothing more;
              0.16: group < no (no depthwise conv)
  channel-wise (FindAndApplyChannelThresholdNet, in training) 0.15: nothing more;
              0.16 / 0.17: group < no and both kernel dims > 2 (1x1 convs never sparsified)
The target fraction is "high" when ni >= 256 and no >= 512, "mid" when ni >= 32 and
no >= 32, else "low".

Layer-wise threshold, one per layer. M = max |w|, s = M * step_factor, cap = min(value_max,
maxratio * M). Coarse pass: t = 0, 100s, 200s, ... while t < M and t < cap, keep the last t
whose zero fraction (|w| <= t) is <= the target and stop at the first that is not. Fine
pass: t from max(t_coarse - 100s, 0) by s while t < t_coarse + 100s (and < M, < cap), same
rule, starting again from 0.

Channel-wise thresholds, one per output channel (the channel's own M, s and count). cap =
min(value_max, maxratio * M, M). Granularity g = 1000, 100, 10, 1: the first pass scans
from 0 by g*s up to the cap; each later one scans by g*s from max(best - 20 g s, 0) while
t < best + 20 g s (and < cap), keeping the best found so far when nothing passes.

TI loops in float32 (`for (float step = ...; ...; step += step_size)`), so a candidate is
the float32 running sum, not k * s. We generate exactly those sums (np.add.accumulate is
sequential in float32) and compare the float32 ratio count / n with the float32 fraction, so
the thresholds are TI's bit for bit. The count of |w| <= t for every candidate of every
channel at once is one searchsorted over the sorted |w| of all channels (_SortedRows).
Where TI would loop forever (a step too small to move t) we raise a CaffeError instead.

In-training schedule (G3, SolverParameter sparse_mode + sparsity_*): g3_pass_due and
g3_fractions below; the hook that runs it is jacinto_sparsity.py.
"""
import math
from typing import NamedTuple

import numpy as np

from ..errors import CaffeError

F32 = np.float32
#: more candidates than this in one search means a step factor too small to be meant
MAX_CANDIDATES = 10_000_000
#: candidates generated per row and block of a scan
_BLOCK = 4096
SOFTMAX_TYPES = ("Softmax", "SoftmaxWithLoss")


# --- zero test -----------------------------------------------------------------------------

def zero_mask(w, threshold=0.0):
    """True where TI counts w as zero: |w| <= threshold (in w's dtype, as TI's Dtype)."""
    w = np.asarray(w)
    return np.abs(w) <= w.dtype.type(threshold)


def zero_count(w, threshold=0.0):
    return int(np.count_nonzero(zero_mask(w, threshold)))


def zero_fraction(w, threshold=0.0):
    """TI's `float(count_zero(t)) / float(count)`, in float32; 0 for an empty array."""
    w = np.asarray(w)
    if w.size == 0:
        return 0.0
    return float(F32(zero_count(w, threshold)) / F32(w.size))


def zero_out(w, threshold, out=None):
    """w with every |w| <= threshold set to +0 (in place when out is w)."""
    w = np.asarray(w)
    return _zeroed_where(w, zero_mask(w, threshold), out)


def _zeroed_where(w, mask, out):
    """w with mask's places set to +0, into out (a copy when None; in place when out is w)."""
    if out is None:
        out = w.copy()
    elif out is not w:
        np.copyto(out, w)
    np.copyto(out, 0, where=mask)
    return out


# --- which layers, which fraction ----------------------------------------------------------

class ConvShape(NamedTuple):
    ni: int      # input channels, all groups
    no: int      # output channels
    group: int
    kh: int
    kw: int


class Eligibility(NamedTuple):
    group_below_outputs: bool   # group < no: skips depthwise (and fully grouped) convs
    min_kernel: int             # both kernel dims >= this (3: skips 1x1 and 2x2)


#: (search, caffe-jacinto version) -> the extra rules beyond ni >= 32 or no >= 32
ELIGIBILITY = {
    ("layer", "0.15"): Eligibility(False, 0),
    ("layer", "0.16"): Eligibility(True, 0),
    ("channel", "0.15"): Eligibility(False, 0),
    ("channel", "0.16"): Eligibility(True, 3),
    ("channel", "0.17"): Eligibility(True, 3),
}


def eligibility(search, vintage):
    rules = ELIGIBILITY.get((search, vintage))
    if rules is None:
        known = ", ".join(v for s, v in ELIGIBILITY if s == search)
        raise CaffeError(f"no caffe-jacinto {search}-wise thresholding rules for version "
                         f"'{vintage}' (known: {known})")
    return rules


def conv_shape(weight_shape, group=1):
    """ConvShape of a Convolution weight [no, ni/group, kh, kw, ...] (TI reads 2 dims)."""
    shape = tuple(int(d) for d in weight_shape)
    if len(shape) < 2:
        n = int(np.prod(shape))
        return ConvShape(n, n, int(group), 1, 1)
    kh = shape[2] if len(shape) > 2 else 1
    kw = shape[3] if len(shape) > 3 else 1
    return ConvShape(shape[1] * int(group), shape[0], int(group), kh, kw)


def ineligible_reason(shape, rules):
    """Why TI leaves this conv alone, or None when it thresholds it."""
    if shape.ni < 32 and shape.no < 32:
        return "fewer than 32 input and output channels"
    if rules.group_below_outputs and shape.group >= shape.no:
        return f"group {shape.group} >= num_output {shape.no} (depthwise)"
    if min(shape.kh, shape.kw) < rules.min_kernel:
        return f"kernel {shape.kh}x{shape.kw} smaller than 3x3"
    return None


def target_fraction(shape, low, mid, high):
    """TI's choice: high if ni >= 256 and no >= 512, mid if ni >= 32 and no >= 32, else low."""
    if shape.ni >= 256 and shape.no >= 512:
        return high
    if shape.ni >= 32 and shape.no >= 32:
        return mid
    return low


def measured_layers(layer_types):
    """Indices of the Convolution layers whose weights count in TI's measured sparsity
    (0.16/0.17 GetConnectivitySparsity): not those followed, in the layer list, by a
    Softmax or SoftmaxWithLoss."""
    out = []
    for i, kind in enumerate(layer_types):
        following = layer_types[i + 1] if i + 1 < len(layer_types) else None
        if kind == "Convolution" and following not in SOFTMAX_TYPES:
            out.append(i)
    return out


# --- the searches --------------------------------------------------------------------------

class _SortedRows:
    """The sorted |w| of each row as one uint64 array: the row index in the high 32 bits, the
    float32 bit pattern (monotone for non-negative floats) in the low 32. One searchsorted
    then counts |w| <= t for any number of (row, t) pairs, exactly."""

    def __init__(self, magnitudes):
        rows, self.n = magnitudes.shape
        # + 0 turns a -0 into +0, whose bit pattern sorts first
        ordered = np.ascontiguousarray(np.sort(magnitudes + F32(0), axis=1))
        high = np.arange(rows, dtype=np.uint64)[:, None] << np.uint64(32)
        self.keys = (high | ordered.view(np.uint32).astype(np.uint64)).ravel()

    def count(self, rows, thresholds):
        """#(|w| <= t) for thresholds[i, j] (>= 0) in row rows[i]."""
        t = np.ascontiguousarray(thresholds + F32(0), dtype=F32)
        high = rows.astype(np.uint64)[:, None] << np.uint64(32)
        found = np.searchsorted(self.keys, high | t.view(np.uint32).astype(np.uint64),
                                side="right")
        return found - rows[:, None].astype(np.int64) * self.n


def _scan(sorted_rows, start, stop, step, fraction, best):
    """TI's loop for every row r at once:
        for (float t = start[r]; t < stop[r]; t += step[r])
            if (float(count(|w| <= t)) / n <= fraction[r]) best[r] = t; else break;
    Returns the new best (float32); rows with no candidate keep theirs."""
    best = best.astype(F32).copy()
    t = start.astype(F32).copy()
    n = F32(sorted_rows.n)
    live = t < stop
    if live.any():
        spans = (stop[live].astype(np.float64) - t[live]) / step[live]
        if not (step[live] > 0).all() or spans.max() > MAX_CANDIDATES:
            raise CaffeError("threshold search: the step (max |w| * step factor) is too small "
                             f"to reach the cap in {MAX_CANDIDATES} steps")
    while live.any():
        rows = np.flatnonzero(live)
        span = ((stop[rows].astype(np.float64) - t[rows]) / step[rows]).max()
        width = min(_BLOCK, math.ceil(span) + 2)
        seq = np.empty((len(rows), width), F32)
        seq[:, 0] = t[rows]
        seq[:, 1:] = step[rows, None]
        candidates = np.add.accumulate(seq, axis=1, dtype=F32)
        counts = sorted_rows.count(rows, candidates).astype(F32)
        passes = (candidates < stop[rows, None]) & (counts / n <= fraction[rows, None])
        leading = np.logical_and.accumulate(passes, axis=1).sum(axis=1)
        found = leading > 0
        best[rows[found]] = candidates[found, leading[found] - 1]
        # a row goes on only when its whole block passed
        going = leading == width
        following = candidates[:, -1] + step[rows]
        if (going & (following <= candidates[:, -1])).any():
            raise CaffeError("threshold search: the step (max |w| * step factor) is too small "
                             "to change the threshold in float32")
        t[rows] = following
        live[rows] = going & (following < stop[rows])
    return best


def _rows(w, rows):
    return np.abs(np.asarray(w, dtype=F32)).reshape(rows, -1)


def _check_search_args(fraction, maxratio, value_max, step_factor):
    for name, value in (("threshold fraction", fraction), ("maxratio", maxratio),
                        ("value_max", value_max), ("step factor", step_factor)):
        if not math.isfinite(float(value)):
            raise CaffeError(f"threshold search: {name} must be a finite number, got {value}")
    if float(step_factor) <= 0:
        raise CaffeError(f"threshold search: step factor must be > 0, got {step_factor}")


def layer_threshold(w, fraction, maxratio, value_max, step_factor):
    """FindAndApplyThresholdNet's threshold for one weight array (float32)."""
    _check_search_args(fraction, maxratio, value_max, step_factor)
    if np.asarray(w).size == 0:
        return F32(0)
    magnitudes = _rows(w, 1)
    table = _SortedRows(magnitudes)
    top = magnitudes.max(axis=1)
    step = top * F32(step_factor)
    cap = np.minimum(F32(value_max), top * F32(maxratio))
    coarse_step = step * F32(100)
    frac = np.full(1, F32(fraction))
    zero = np.zeros(1, F32)
    coarse = _scan(table, zero, np.minimum(top, cap), coarse_step, frac, zero)
    start = np.maximum(coarse - coarse_step, F32(0))
    stop = np.minimum(np.minimum(coarse + coarse_step, top), cap)
    return _scan(table, start, stop, step, frac, zero)[0]


def channel_thresholds(w, fraction, maxratio, value_max, step_factor):
    """FindAndApplyChannelThresholdNet's threshold of each output channel (float32 array)."""
    _check_search_args(fraction, maxratio, value_max, step_factor)
    w = np.asarray(w)
    channels = w.shape[0] if w.ndim else 1
    if w.size == 0:
        return np.zeros(channels, F32)
    magnitudes = _rows(w, channels)
    table = _SortedRows(magnitudes)
    top = magnitudes.max(axis=1)
    step = top * F32(step_factor)
    cap = np.minimum(np.minimum(F32(value_max), top * F32(maxratio)), top)
    frac = np.full(channels, F32(fraction))
    best = np.zeros(channels, F32)
    for search_iter, granularity in enumerate((1000, 100, 10, 1)):
        coarse_step = step * F32(granularity)
        reach = coarse_step * F32(10) * F32(2)
        if search_iter == 0:
            start, stop = np.zeros(channels, F32), cap
        else:
            start = np.maximum(best - reach, F32(0))
            stop = np.minimum(best + reach, cap)
        best = _scan(table, start, stop, coarse_step, frac, best)
    return best


def apply_channel_thresholds(w, thresholds, out=None):
    """w with |w| <= thresholds[c] zeroed in each output channel c."""
    w = np.asarray(w)
    t = np.asarray(thresholds).astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
    return _zeroed_where(w, np.abs(w) <= t, out)


class ConvThreshold(NamedTuple):
    """What thresholding did to one Convolution weight."""
    shape: ConvShape
    fraction: float         # the target fraction chosen (low / mid / high)
    max_abs: float
    thresholds: np.ndarray  # one value (layer-wise) or one per output channel
    zero_fraction: float    # of the whole weight after zeroing (|w| <= 0)


def threshold_conv(w, group, fractions, maxratio, value_max, step_factor, rules,
                   channel_wise, out=None):
    """Threshold one Convolution weight as TI does, in place when out is w.

    fractions = (low, mid, high); rules = eligibility(...). Returns (ConvThreshold, None) or,
    when TI skips the layer, (None, the reason)."""
    shape = conv_shape(np.shape(w), group)
    reason = ineligible_reason(shape, rules)
    if reason is not None:
        return None, reason
    fraction = target_fraction(shape, *fractions)
    max_abs = float(np.abs(np.asarray(w, F32)).max()) if np.size(w) else 0.0
    if channel_wise:
        thresholds = channel_thresholds(w, fraction, maxratio, value_max, step_factor)
    else:
        thresholds = np.array([layer_threshold(w, fraction, maxratio, value_max,
                                               step_factor)], F32)
    if channel_wise:
        result = apply_channel_thresholds(w, thresholds, out)
    else:
        result = zero_out(w, thresholds[0], out)
    return ConvThreshold(shape, float(fraction), max_abs, thresholds,
                         zero_fraction(result)), None


# --- the in-training schedule (G3) ---------------------------------------------------------

#: the step factor of the channel-wise search in training: 0.16/0.17 (0.15 used 1e-6)
G3_STEP_FACTOR = F32(1e-7)


def g3_factor_max(target):
    """0.16/0.17's cap on sparsity_factor: min(target + 0.15, 0.95), computed in double and
    stored in a float, as TI."""
    return F32(min(float(F32(target)) + 0.15, 0.95))


def g3_pass_due(seen_iter, factor, measured, target, start_iter, step_iter):
    """Whether ThresholdNet (0.16/0.17) runs a thresholding pass at iteration `seen_iter`:
    target > 0, seen_iter >= start_iter, seen_iter % step_iter == 0, factor <=
    g3_factor_max(target) and the measured sparsity (a float, NaN when nothing is measured,
    which never passes, as TI's 0/0) still below the target."""
    target = F32(target)
    if not (target > 0 and seen_iter >= start_iter and seen_iter % step_iter == 0):
        return False
    return bool(F32(factor) <= g3_factor_max(target) and F32(measured) < target)


def g3_fractions(factor):
    """(low, mid, high) of a pass: factor / 2, factor, factor (float32)."""
    factor = F32(factor)
    return factor / F32(2), factor, factor
