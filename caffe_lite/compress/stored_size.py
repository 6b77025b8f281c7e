"""What a pruned or quantized weight blob takes as stored, against float32 (DNS / INQ, #12).

The storage scheme is Deep Compression's (Han et al. 2016), the one the DNS and INQ papers
count against: the non-zero weights in order, each with its distance from the previous one
as a 4-bit relative index (a gap over 15 stores a filler zero entry, as they do), and each
value as a 4-bit code when every value of the blob is 0 or +-2^k with at most 15 codes
(INQ: 2 x 7 exponents and zero), else as a 32-bit float. Biases are stored as float32.
"""
import numpy as np

from .inq import power_of_two_report

INDEX_BITS = 4
CODE_BITS = 4
FLOAT_BITS = 32


def relative_index_entries(w):
    """Entries stored: the non-zeros plus the filler zeros that gaps over 15 need."""
    flat = np.flatnonzero(np.asarray(w).reshape(-1))
    if flat.size == 0:
        return 0
    gaps = np.diff(np.concatenate(([-1], flat))) - 1      # zeros skipped before each
    max_gap = (1 << INDEX_BITS) - 1
    return int(flat.size + (gaps // (max_gap + 1)).sum())


def value_bits(w):
    """Bits per stored value: a 4-bit code if the blob is all 0 / +-2^k in 15 codes."""
    exact, exps = power_of_two_report(w)
    signs = 2 if (np.asarray(w) < 0).any() and (np.asarray(w) > 0).any() else 1
    return CODE_BITS if exact and len(exps) * signs + 1 <= 1 << CODE_BITS else FLOAT_BITS


def stored_bits(w):
    """Bits that the sparse, coded form of weight blob `w` takes."""
    return relative_index_entries(w) * (INDEX_BITS + value_bits(w))
