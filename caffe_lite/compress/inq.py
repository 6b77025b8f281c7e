"""Incremental Network Quantization's rules (Zhou et al. 2017), as pure functions over arrays.

Two versions, FORK_FIELDS.md 4.2 and 4.3; masks are float arrays, 1 = still floating point
and trainable, 0 = quantized and frozen.

NNMC (INQConvolution / INQInnerProduct, `portion: prev portion: cur`), `nnmc_quantize`:
  max exponent n1 = floor(log2(4/3 * max |w| over mask 1)) when nothing is quantized yet
  (or every quantized entry is 0: a DNS-pruned model), else round(log2(max |quantized|));
  n2 = n1 - num_quantum_values + 1. Of the U float entries, U0 = round(U / (1 - prev)) is
  the estimated original count and K = round(U0 * (1 - cur)) stay float: every float entry
  with |w| >= the K-th smallest float |w| becomes sign(w) * 2^floor(log2(4|w|/3)), or 0
  when that exponent is below n2 (so |w| < 0.75 * 2^n2 becomes 0), and is frozen.

Official INQ (AojunZhou, plain Caffe files; `-inq_portion` here), `official_quantize`:
  over the whole blob, n1 = floor(log2(4/3 * max |w|)); the entries at or above the
  partition p = int(count * (1 - portion)) - 1 of the ascending |w| become the nearest value
  of {0, +-2^(n1-7) .. +-2^n1} (8 exponents): boundaries at 1.5 * 2^k, and below
  0.5 * 2^(n1-7) the nearest is 0. The official source hard-codes the fraction left float
  (0.7 for a 30% step); `portion` here is the fraction quantized, the issue's schedule.
"""
import math

import numpy as np

#: official INQ's exponent count (README: "5 bits": 8 powers, sign and zero)
OFFICIAL_EXPONENTS = 8


def _round_half_away(x):
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _floor_log2_4_3(a):
    """floor(log2(4a/3)), in double, as the C++ computes log(4.0 * a / 3.0) / log(2.0);
    -inf for 0 (which every rule then maps to 0)."""
    with np.errstate(divide="ignore"):
        return np.floor(np.log(4.0 * np.asarray(a, np.float64) / 3.0) / math.log(2.0))


def nnmc_exponent_range(w, mask, num_quantum_values):
    """(n1, n2) for NNMC's step, or None when every entry is quantized already."""
    a = np.abs(np.asarray(w, np.float64))
    floating = mask == 1
    quantized = ~floating
    if not floating.any():
        return None
    if quantized.any() and a[quantized].max() > np.finfo(np.float32).eps:
        n1 = _round_half_away(math.log(a[quantized].max()) / math.log(2.0))
    else:
        # an all-zero blob (a zero-filled bias) has no scale: NNMC stops with a CHECK; its
        # entries are 0 already, which any range keeps, so take the smallest normal float's
        n1 = int(_floor_log2_4_3(max(a[floating].max(), np.finfo(np.float32).tiny)))
    return n1, n1 - int(num_quantum_values) + 1


def nnmc_counts(mask, previous, current):
    """(to quantize now, to leave float) for NNMC's accumulated-portion step."""
    floating = int(np.count_nonzero(mask == 1))
    original = _round_half_away(floating / (1.0 - previous)) if previous < 1 else floating
    keep = _round_half_away(original * (1.0 - current))
    return floating - keep, keep


def nnmc_quantize(w, mask, previous, current, num_quantum_values):
    """NNMC's ShapeIntoTwoPower: quantize the next portion of `w` in place and clear its
    mask entries. Returns (n1, n2, how many were quantized) (n1 None: nothing to do)."""
    if current == 0:
        return None, None, 0
    exps = nnmc_exponent_range(w, mask, num_quantum_values)
    if exps is None:
        return None, None, 0
    n1, n2 = exps
    todo, keep = nnmc_counts(mask, previous, current)
    if todo <= 0:
        return n1, n2, 0
    flat_w = w.reshape(-1)
    flat_m = mask.reshape(-1)
    floating = np.flatnonzero(flat_m == 1)
    a = np.abs(flat_w[floating])
    tau = np.sort(a)[keep] if keep < a.size else np.inf
    chosen = floating[a >= tau]
    values = flat_w[chosen].astype(np.float64)
    e = _floor_log2_4_3(np.abs(values))
    q = np.where(e >= n2, np.sign(values) * np.exp2(e), 0.0)
    flat_w[chosen] = q.astype(flat_w.dtype)
    flat_m[chosen] = 0
    return n1, n2, int(chosen.size)


def official_quantize(w, portion, exponents=OFFICIAL_EXPONENTS):
    """Official INQ's load-time step on one blob: quantize the largest `portion` of |w| in
    place to the nearest power of two (or 0) and return the mask (1 float, 0 frozen)."""
    flat = w.reshape(-1)
    mask = np.ones(flat.shape, w.dtype)
    if flat.size == 0 or portion <= 0:
        return mask.reshape(w.shape)
    a = np.abs(flat.astype(np.float64))
    if a.max() == 0:
        mask[:] = 0
        return mask.reshape(w.shape)
    n1 = int(_floor_log2_4_3(a.max()))
    p = int(flat.size * (1.0 - portion)) - 1
    tau = np.sort(a)[p] if p >= 0 else -np.inf
    chosen = np.flatnonzero(a >= tau)
    flat[chosen] = nearest_power(flat[chosen], n1 - exponents + 1, n1).astype(flat.dtype)
    mask[chosen] = 0
    return mask.reshape(w.shape)


def nearest_power(values, n2, n1):
    """Each value replaced by the nearest of {0, +-2^n2 .. +-2^n1}: between powers the
    boundary is 1.5 * 2^k (floor(log2(4|w|/3))), between 0 and 2^n2 it is 0.5 * 2^n2 (a tie
    goes to the smaller magnitude, as a scan over ascending candidates finds it)."""
    v = np.asarray(values, np.float64)
    a = np.abs(v)
    e = np.minimum(_floor_log2_4_3(a), n1)
    small = e < n2
    magnitude = np.where(small, np.where(a > 0.5 * 2.0 ** n2, 2.0 ** n2, 0.0), np.exp2(e))
    return np.sign(v) * magnitude


def power_of_two_report(w):
    """(whether every entry is 0 or +-2^k, the sorted distinct exponents k)."""
    a = np.abs(np.asarray(w, np.float64)).reshape(-1)
    nz = a[a != 0]
    if nz.size == 0:
        return True, []
    mantissa, exponent = np.frexp(nz)      # nz = mantissa * 2^exponent, mantissa in [0.5, 1)
    exact = bool(np.all(mantissa == 0.5))
    exps = sorted({int(e) - 1 for e in np.unique(exponent[mantissa == 0.5])})
    return exact, exps
