"""Sparsity patterns for the sparse-kernel property tests: the zeros SSL's regularizers leave
(whole rows: filters; whole columns: kernel shapes / channels; blocks) and unstructured ones."""
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import configuration, settings, strategies as st

# Hypothesis keeps a cache of constants (and failing examples) under ./.hypothesis, which is not
# in .gitignore: keep it out of the checkout.
configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "caffe-lite-hypothesis")

#: small, and no example database: the tests must run in seconds and read the same every time
SETTINGS = settings(max_examples=25, deadline=None, database=None)

PATTERNS = ("elementwise", "rows", "cols", "blocks", "zero", "dense")

patterns = st.sampled_from(PATTERNS)
keeps = st.sampled_from([0.05, 0.3, 0.7])
seeds = st.integers(0, 2**32 - 1)


def sparsify(a, pattern, rng, keep):
    """A copy of the 2-d `a` with zeros in `pattern`; about `keep` of the rows, columns,
    blocks or entries survive."""
    a = np.array(a)
    m, k = a.shape
    if pattern == "elementwise":
        a[rng.random(a.shape) >= keep] = 0
    elif pattern == "rows":
        a[rng.random(m) >= keep] = 0
    elif pattern == "cols":
        a[:, rng.random(k) >= keep] = 0
    elif pattern == "blocks":
        bh, bw = int(rng.integers(1, m + 1)), int(rng.integers(1, k + 1))
        for i in range(0, m, bh):
            for j in range(0, k, bw):
                if rng.random() >= keep:
                    a[i:i + bh, j:j + bw] = 0
    elif pattern == "zero":
        a[...] = 0
    return a


def f32_bound(terms, magnitude):
    """Rounding bound of a float32 sum of `terms` products whose absolute values sum to
    `magnitude` (any summation order, FMA or not): (terms + 2) * eps32 * magnitude."""
    return (terms + 2) * float(np.finfo(np.float32).eps) * magnitude
