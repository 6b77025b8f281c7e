"""Zeros in a pattern, and the pattern of a weight's zeros: pure functions over SSL's matrix.

The matrix is SSL's view of a weight (compress/group_lasso.py): rows = filters (outputs),
columns = C/group * kh * kw (inputs); a convolution with `group` g owns g bands of M/g rows,
each with all the columns. A pattern's units, and how many of them `prune` zeroes:

    random   elements of the whole matrix           round(s * M * K)
    rows     rows (whole filters)                   round(s * M)
    columns  columns of each group's band           round(s * K) in every group
    blocks   BLOCK-shaped tiles of each group's band round(s * tiles) in every group

Tiles cover a band from its top-left corner: BLOCK[0] x BLOCK[1] (4 x 4) clipped to the
band (a band of 2 rows has 2 x 4 tiles), the last row and column of tiles cut at the
band's edge, so a tile never straddles two groups (LOWERED_CCNMM compacts each group on its
own). round is Python's (to nearest, ties to even: 0.9 of 25 columns is 22). The
fraction of units zeroed is exact to that rounding; for blocks the fraction of
elements is the cut tiles' share, close to s. Units are drawn without replacement from the
caller's numpy Generator, so a seed fixes them.
"""
from typing import NamedTuple

import numpy as np

PATTERNS = ("random", "rows", "columns", "blocks")
#: tile rows x columns of the `blocks` pattern, clipped to the band
BLOCK = (4, 4)


def _bands(mat, group):
    """The group bands of the matrix (views)."""
    m = mat.shape[0]
    if group < 1 or m % group:
        raise ValueError(f"{m} rows do not split into {group} groups")
    per = m // group
    return [mat[k * per:(k + 1) * per] for k in range(group)]


def _tiles(rows, cols, block):
    """(row slice, column slice) of each tile of a rows x cols band."""
    bh, bw = max(1, min(block[0], rows)), max(1, min(block[1], cols))
    return [(slice(i, i + bh), slice(j, j + bw))
            for i in range(0, rows, bh) for j in range(0, cols, bw)]


def _count(sparsity, units):
    return int(round(sparsity * units))


def prune(mat, sparsity, pattern, rng, group=1, block=BLOCK):
    """A copy of the 2-d `mat` with `sparsity` of its units (module docstring) set to 0."""
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1]")
    out = np.array(mat, copy=True)
    m, k = out.shape
    if pattern == "random":
        flat = out.reshape(-1)
        flat[rng.choice(flat.size, _count(sparsity, flat.size), replace=False)] = 0
    elif pattern == "rows":
        out[rng.choice(m, _count(sparsity, m), replace=False)] = 0
    elif pattern == "columns":
        for band in _bands(out, group):
            band[:, rng.choice(k, _count(sparsity, k), replace=False)] = 0
    elif pattern == "blocks":
        for band in _bands(out, group):
            tiles = _tiles(band.shape[0], k, block)
            for t in rng.choice(len(tiles), _count(sparsity, len(tiles)), replace=False):
                band[tiles[t]] = 0
    else:
        raise ValueError(f"unknown pattern '{pattern}' (patterns: {', '.join(PATTERNS)})")
    return out


class Structure(NamedTuple):
    """Where a matrix's zeros lie; fractions in [0, 1]."""
    elements: float         # zero elements / elements
    rows: float             # all-zero rows / rows
    columns: float          # all-zero columns of the group bands / (group * columns)
    blocks: float           # all-zero tiles / tiles (the `blocks` pattern's tiling)
    in_rows: float          # zeros inside all-zero rows / zeros (0 without zeros)
    in_columns: float       # zeros inside all-zero band columns / zeros (0 without zeros)


def structure(mat, group=1, block=BLOCK):
    """Structure of the 2-d `mat`'s exact zeros (the `-weights` report and the tests' check
    that `prune` zeroed the units it says)."""
    zero = np.asarray(mat) == 0
    m, k = zero.shape
    n_zero = int(np.count_nonzero(zero))
    zero_rows = zero.all(axis=1)
    in_cols = col_count = tiles = zero_tiles = 0
    for band in _bands(zero, group):
        cols = band.all(axis=0)
        col_count += int(np.count_nonzero(cols))
        in_cols += int(np.count_nonzero(cols)) * band.shape[0]
        band_tiles = _tiles(band.shape[0], k, block)
        tiles += len(band_tiles)
        zero_tiles += sum(bool(band[t].all()) for t in band_tiles)
    in_rows = int(np.count_nonzero(zero_rows)) * k
    return Structure(
        elements=n_zero / zero.size if zero.size else 0.0,
        rows=float(np.count_nonzero(zero_rows)) / m if m else 0.0,
        columns=col_count / (group * k) if k else 0.0,
        blocks=zero_tiles / tiles if tiles else 0.0,
        in_rows=in_rows / n_zero if n_zero else 0.0,
        in_columns=in_cols / n_zero if n_zero else 0.0)
