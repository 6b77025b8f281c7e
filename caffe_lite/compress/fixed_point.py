"""Dynamic fixed point as caffe-jacinto simulates it: ranges, widths, scales, fake quantization.

All three TI schemas (FORK_FIELDS.md 1.4) store a value x as an integer code q and compute
with x' = (q - offset) / scale, the "fake quantized" float:

    q  = clamp(round(x * scale + offset), lo, hi)        x' = (q - offset) * (1 / scale)
    lo, hi = 0, 2^b - 1 (unsigned code)  or  -2^(b-1), 2^(b-1) - 1 (signed code)

Q-A (caffe-0.15, rc0.16.1; Ristretto-derived, per layer): scale = 2^fl, offset 0, where the
fractional length fl = bitwidth - il and the integer length il comes from the range:
  activations  il = ceil(log2 max(|min|, |max|)), + 1 unless unsigned_check and min >= 0
  weights      il = ceil(log2 |max|) + 1        (TI reads the max only, not max |w|)
Q-B (caffe-0.16 head) and Q-C (caffe-0.17), per blob (Net::EstiamteQScaleParams):
  power of two  bits = ceil(log2 |max - min|) with an offset, else ceil(log2 max|.|) (+1 signed)
                shift = bits - bitwidth, scale = 2^-shift (Q-B stores fracbits = -shift,
                Q-C stores shiftbits = shift)
  otherwise     scale = (2^b - 1) / |max - min| with an offset, (2^b - 1) / max|.| unsigned,
                (2^(b-1) - 1) / max|.| signed
  apply_offset  offset = -min * scale, and the code is unsigned
The clamp is applied to activations and to weight blob 0, never to a bias (TI's `clip`).

Rounding: NEAREST is C's round(), half away from zero (not NumPy's half to even);
STOCHASTIC is floor(v + u), u ~ U[0, 1), drawn from a numpy Generator passed in (one seed
per call, then a counter-based hash stream; TI calls rand() per element). TI does
the scaling in float (Dtype) and adds its double uniform draw; so do we (float32 nets compute
in float32, the draw is added in float64).

Ranges: Q-A keeps an exponential moving average with weight 0.99 on the old value, from 0
(or the layer's saved quantization_param). Q-C multiplies an activation's min and max by
range_expansion_factor and averages them with weight range_update_factor on the new sample
(weight 1 on the very first); Q-B expands by 2 and keeps only the newest sample up to the
start pass, then expands by 1.2 (1 with power2_range) and keeps 0.9 of the old value. Weight
ranges are exact in Q-B/Q-C. All range arithmetic is float32, as TI's.

Where we differ: a zero range (an all-zero bias) gives scale 1 here; TI divides by zero and
writes NaN into the blob. log2(0) is taken as 0 bits in every schema (0.17's guard; 0.15/0.16
call ceil(log2(0)), undefined in C++).
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import threads
from ..kernels import neuron
from ..kernels.jit import kernel

#: QuantizationParameter.Rounding values (all three schemas agree)
NEAREST = 0
STOCHASTIC = 1

_F32 = np.float32
# C's FLT_MAX and FLT_MIN, where TI's range searches start
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)


# --- bits and widths -----------------------------------------------------------------------
def abs_bits(value):
    """ceil(log2 |value|), TI's EstimateAbsBits on a float; 0 for 0."""
    v = _F32(abs(float(value)))
    if v == 0 or not np.isfinite(v):
        return 0
    return int(np.ceil(np.log2(v)))


def code_bounds(bitwidth, unsigned):
    """The integer codes a `bitwidth`-bit value may take: (lo, hi)."""
    if unsigned:
        return 0.0, float(2 ** bitwidth - 1)
    return -float(2 ** (bitwidth - 1)), float(2 ** (bitwidth - 1) - 1)


def qa_activation_length(lo, hi, unsigned_check):
    """Q-A integer length of an activation range and whether it is stored unsigned
    (TI's GetIntegerLengthIn / GetIntegerLengthOut)."""
    is_unsigned = bool(unsigned_check and lo >= 0)
    il = abs_bits(max(abs(float(lo)), abs(float(hi))))
    return (il if is_unsigned else il + 1), is_unsigned


def qa_weight_length(hi):
    """Q-A integer length of a weight blob: from its max alone (TI's GetIntegerLengthWeights)."""
    return abs_bits(hi) + 1


@dataclass
class QScale:
    """One blob's fixed-point format in the Q-B/Q-C form (the fields of QParams)."""
    bitwidth: int
    scale: float
    offset: float = 0.0
    unsigned_data: bool = False
    unsigned_quant: bool = False
    shiftbits: int = 0
    fracbits: int = 0
    min: float = 0.0
    max: float = 0.0


def estimate_qscale(lo, hi, bitwidth, power2, apply_offset):
    """Q-B/Q-C scale and offset of a range (TI's EstiamteQScaleParams with scale_applied 1;
    0.17's scale_applied chain cancels unless power-of-two activations meet non-power-of-two
    weights, see docs/jacinto.md)."""
    lo, hi = float(_F32(lo)), float(_F32(hi))
    unsigned = lo >= 0
    max_abs = max(abs(lo), abs(hi))
    span = abs(hi - lo)
    if power2:
        bits = abs_bits(span) if apply_offset else abs_bits(max_abs) + (0 if unsigned else 1)
        shift = bits - int(bitwidth)
        scale = math.ldexp(1.0, -shift)
        fracbits = -shift
    else:
        denominator = span if apply_offset else max_abs
        levels = 2 ** bitwidth - 1 if (apply_offset or unsigned) else 2 ** (bitwidth - 1) - 1
        scale = float(_F32(levels / denominator)) if denominator else 1.0
        shift = fracbits = 0
    offset = float(_F32(-lo * scale)) if apply_offset else 0.0
    return QScale(int(bitwidth), scale, offset, unsigned, unsigned or bool(apply_offset),
                  shift, fracbits, lo, hi)


def qa_scale(bitwidth, fl, unsigned):
    """A Q-A format (bitwidth, fractional length) as a QScale: scale 2^fl, no offset."""
    return QScale(int(bitwidth), math.ldexp(1.0, int(fl)), 0.0, bool(unsigned), bool(unsigned),
                  -int(fl), int(fl))


# --- ranges -------------------------------------------------------------------------------
QA_RANGE_DECAY = _F32(0.99)


def qa_range_update(old, sample):
    """Q-A's moving average: 0.99 * old + (1 - 0.99) * sample, in float32 as TI's Dtype."""
    alpha = QA_RANGE_DECAY
    beta = _F32(1.0) - alpha
    return _F32(_F32(old) * alpha + _F32(sample) * beta)


def qc_range_update(old, sample, first, update_factor, expansion_factor):
    """Q-C's running range of an activation bound: the sample is expanded, then averaged
    with weight update_factor (1 on the first pass)."""
    beta = _F32(1.0) if first else _F32(update_factor)
    alpha = _F32(1.0) - beta
    expanded = _F32(_F32(sample) * _F32(expansion_factor))
    return _F32(_F32(old) * alpha + expanded * beta)


def qb_range_update(old, sample, warming_up, power2_range):
    """Q-B's running range: up to the start pass the sample expanded by 2 replaces the old
    value; later it is expanded by 1.2 (1 with power2_range) and weighs 0.1."""
    expansion = _F32(2.0) if warming_up else (_F32(1.0) if power2_range else _F32(1.2))
    alpha = _F32(0.0) if warming_up else _F32(0.9)
    beta = _F32(1.0) - alpha
    return _F32(_F32(old) * alpha + _F32(_F32(sample) * expansion) * beta)


# fastmath lets LLVM vectorise the two reductions (min and max are exact in any order; only
# a NaN, which no usable range has, could come out differently)
@kernel(nogil=True, fastmath=True)
def _min_max(x):
    lo = x[0]
    hi = x[0]
    for i in range(x.size):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


def blob_range(array):
    """(min, max) of an array in one pass, split over threads when it is long; (0, 0) when
    it is empty (Caffe's Blob::min/max)."""
    flat = array.reshape(-1)
    n = flat.size
    if n == 0:
        return 0.0, 0.0
    workers = min(threads.get_num_threads(), n)
    if n < neuron.PARALLEL_MIN or workers < 2:
        lo, hi = _min_max(flat)
        return float(lo), float(hi)
    bounds = [n * i // workers for i in range(workers + 1)]
    parts = threads.run_parallel(_min_max, [(flat[a:b],) for a, b in zip(bounds, bounds[1:])])
    return float(min(p[0] for p in parts)), float(max(p[1] for p in parts))


# --- fake quantization --------------------------------------------------------------------
# Each kernel rounds one (sliced) array in place, over all of it: LLVM vectorises neither a
# loop over range(start, stop) nor one whose input and output may alias. Without a clamp,
# lo and hi are -inf and +inf. The code is stored into a[i] before it is scaled back, so
# that the back-scaling runs in the array's dtype, as TI's float arithmetic does (Numba
# would otherwise promote to double).
@kernel(nogil=True)
def _fake_quantize_nearest(a, scale, offset, inv_scale, lo, hi, half, magic, base):
    for i in range(a.size):
        v = min(max(a[i] * scale + offset, lo), hi)
        # C's round(): |v| + 2^23 - 2^23 rounds half to even with adds only (|v| < 2^23;
        # larger floats are whole already); a tie rounded down to even goes up instead
        m = abs(v)
        r = (m + magic) - magic
        r = r if m < magic else m
        r = r + (half + half) if m - r == half else r
        a[i] = r if v >= 0 else -r
        a[i] = (a[i] - offset) * inv_scale


@kernel(nogil=True)
def _hash32(z):
    """Chris Wellons' lowbias32 integer hash (32-bit multiplies, so the loop vectorises)."""
    z = np.uint32(z ^ (z >> np.uint32(16)))
    z = np.uint32(z * np.uint32(0x7FEB352D))
    z = np.uint32(z ^ (z >> np.uint32(15)))
    z = np.uint32(z * np.uint32(0x846CA68B))
    return np.uint32(z ^ (z >> np.uint32(16)))


@kernel(nogil=True)
def _fake_quantize_stochastic(a, scale, offset, inv_scale, lo, hi, seed_lo, seed_hi, base):
    for i in range(a.size):
        v = min(max(a[i] * scale + offset, lo), hi)
        # u in [0, 1) with 32 bits (TI: rand() / (RAND_MAX + 1.0), 31 bits): a hash of the
        # element's index under the call's seed, so that any split over threads draws the
        # same numbers, and 4x cheaper than filling a buffer from the Generator
        z = _hash32(np.uint32(np.uint32(base + i) + seed_lo))
        z = _hash32(np.uint32(z ^ seed_hi))
        a[i] = np.floor(np.float64(v) + np.float64(z) * (1.0 / 4294967296.0))
        a[i] = (a[i] - offset) * inv_scale


def _run_split(kernel, a, *args):
    """kernel(a[lo:hi], *args, lo) over contiguous ranges, one per thread when the array is
    long (kernels/neuron.py's rule); the last argument is the range's start."""
    n = a.size
    workers = min(threads.get_num_threads(), n)
    if n < neuron.PARALLEL_MIN or workers < 2:
        kernel(a, *args, 0)
        return
    bounds = [n * i // workers for i in range(workers + 1)]
    threads.run_parallel(kernel, [(a[lo:hi], *args, lo)
                                  for lo, hi in zip(bounds[:-1], bounds[1:])])


def fake_quantize(x, qscale, clip=True, rounding=NEAREST, rng=None, out=None):
    """Round `x` to the fixed-point format `qscale` and back (see the module docstring).

    `out` may be `x` (in place; the default makes a new array). STOCHASTIC needs `rng`, a
    numpy Generator: one 64-bit seed is drawn from it per call, and element i gets a
    uniform draw that is a hash of (seed, i).
    """
    if out is None:
        out = np.empty_like(x)
    if not (x.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("fake_quantize needs C-contiguous arrays")
    if x.size == 0:
        return out
    if out is not x:
        np.copyto(out, x)
    flat = out.reshape(-1)
    t = out.dtype.type
    scale = t(qscale.scale)
    offset = t(qscale.offset)
    inv_scale = t(t(1) / scale)
    lo, hi = code_bounds(qscale.bitwidth, qscale.unsigned_quant) if clip else (-np.inf, np.inf)
    args = (scale, offset, inv_scale, t(lo), t(hi))
    if rounding == STOCHASTIC:
        if rng is None:
            raise ValueError("stochastic rounding needs a numpy Generator")
        seed = int(rng.integers(0, 2 ** 64, dtype=np.uint64))
        _run_split(_fake_quantize_stochastic, flat, *args, np.uint32(seed & 0xFFFFFFFF),
                   np.uint32(seed >> 32))
    else:
        magic = t(2.0 ** (np.finfo(t).nmant))          # 2^23 for float32, 2^52 for float64
        _run_split(_fake_quantize_nearest, flat, *args, t(0.5), magic)
    return out


def integer_codes(x, qscale, clip=True):
    """The integer codes of `x` (round to nearest, clamped when `clip`), as float32: what
    TI's snapshot_log writes for a quantized blob (Net::Convert2FixedPoint_cpu)."""
    v = np.asarray(x, np.float32) * _F32(qscale.scale) + _F32(qscale.offset)
    if clip:
        lo, hi = code_bounds(qscale.bitwidth, qscale.unsigned_quant)
        v = np.clip(v, _F32(lo), _F32(hi))
    a = np.abs(v)
    r = np.floor(a)
    r = np.where(a - r >= _F32(0.5), np.ceil(a), r)   # C's round(): half away from zero
    return np.copysign(r, v).astype(np.float32)
