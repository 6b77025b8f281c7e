"""What a structured-sparse layer costs: the numbers `caffe-lite stat` prints (SSL, #11).

For one Convolution or InnerProduct weight seen as SSL's matrix (group_lasso.py: rows =
filters or outputs, columns = C/group * kh * kw or inputs), with `pixels` output positions
per image (1 for an InnerProduct):

  macs        rows * columns * pixels: the dense multiply-accumulates per image
  macs_nnz    non-zeros * pixels: what an element-sparse kernel (CSR) needs at best
  macs_lean   sum over convolution groups of live rows * live columns * pixels: what is
              left once the all-zero rows (filters) and all-zero columns (input positions of
              the lowered matrix) of each group are removed, as LOWERED_CCNMM computes, so
              the dense GEMM it runs is exactly this size
  params      the weight count; params_nnz its non-zeros (biases are not counted)

and SSL's four percentages (group_lasso.py): element (|w| < 1e-4), column, row and block
(the layer's first block_group_lasso spec, None without one); for DNS / INQ models, the
exponents when every weight is 0 or +-2^k, and the bits of the weights stored sparse with
4-bit relative indices and 4-bit codes (stored_size.py).
"""
from dataclasses import dataclass

import numpy as np

from . import group_lasso, stored_size
from .inq import power_of_two_report


@dataclass
class LayerStat:
    shape: tuple
    macs: int
    macs_nnz: int
    macs_lean: int
    params: int
    params_nnz: int
    element: float
    column: float
    row: float
    block: object        # percent, or None without a block shape
    powers: object       # sorted exponents k when every weight is 0 or +-2^k, else None
    stored_bits: int     # the weights as stored sparse and coded (stored_size.py)
    bias: int = 0        # the bias count (stored as float32 either way)


def live_lines(mat, group):
    """(live rows, live columns) per convolution group: rows are split into `group` equal
    parts, each owning all columns of the matrix view."""
    rows = mat.shape[0]
    per = rows // group
    out = []
    for k in range(group):
        part = mat[k * per:(k + 1) * per] != 0
        out.append((int(np.count_nonzero(part.any(axis=1))),
                    int(np.count_nonzero(part.any(axis=0)))))
    return out


def layer_stat(w, pixels, group=1, block=None, bias=0):
    """LayerStat of weight `w` (float array) producing `pixels` outputs per image per filter;
    `block` = (ydimen, xdimen) or None; `bias` the layer's bias count."""
    mat = group_lasso.as_matrix(w)
    rows, cols = mat.shape
    nnz = int(np.count_nonzero(mat))
    lean = sum(r * c for r, c in live_lines(mat, group)) * pixels
    return LayerStat(
        shape=tuple(int(d) for d in w.shape), macs=rows * cols * pixels,
        macs_nnz=nnz * pixels, macs_lean=lean, params=int(w.size), params_nnz=nnz,
        element=float(group_lasso.element_sparsity(w)),
        column=float(group_lasso.column_sparsity(w)), row=float(group_lasso.row_sparsity(w)),
        block=None if block is None else float(group_lasso.block_sparsity(w, *block)),
        powers=_powers(w), stored_bits=stored_size.stored_bits(w), bias=int(bias))


def _powers(w):
    exact, exps = power_of_two_report(w)
    return tuple(exps) if exact else None
