"""Element-wise arithmetic with Caffe's rounding: Eltwise PROD/SUM/MAX, BLAS-style axpy.

Pure functions over NumPy arrays (float32 or float64) writing into `out`. These layers are
memory-bound, so vectorised NumPy passes are as fast as a Numba loop without the JIT cost.
"""
import numpy as np


def axpy(alpha, x, y):
    """y += alpha * x, rounded as OpenBLAS's saxpy does it.

    OpenBLAS's x86-64 saxpy kernels (Haswell and later) use a fused multiply-add, so in
    float32 `alpha * x + y` is rounded once; float64 gives that single rounding (the product
    of two floats is exact in a double). alpha == 1 needs no product, so it is a plain add.
    float64 layers (gradient checks) use the two-rounding form; no NumPy fma exists.
    """
    if alpha == 1:
        np.add(y, x, out=y)
    elif alpha == -1:
        np.subtract(y, x, out=y)
    elif y.dtype == np.float32 and abs(np.frexp(alpha)[0]) != 0.5:
        # alpha = +-2^k makes alpha * x exact, so only other coefficients need the double
        acc = x.astype(np.float64)
        acc *= np.float64(np.float32(alpha))
        acc += y
        np.copyto(y, acc, casting="unsafe")
    else:
        y += y.dtype.type(alpha) * x


def eltwise_prod(bottoms, out):
    """out = b0 * b1 * b2 ..., multiplied left to right (caffe_mul in a chain)."""
    np.multiply(bottoms[0], bottoms[1], out=out)
    for b in bottoms[2:]:
        np.multiply(out, b, out=out)


def eltwise_prod_grad(bottoms, i, top, top_diff, stable, out):
    """d top / d bottom_i times top_diff.

    stable: the product of the other bottoms, in bottom order (no division, safe at zeros);
    otherwise top / bottom_i, as Caffe's stable_prod_grad: false.
    """
    if stable:
        others = [b for j, b in enumerate(bottoms) if j != i]
        np.copyto(out, others[0])
        for b in others[1:]:
            np.multiply(b, out, out=out)
    else:
        np.divide(top, bottoms[i], out=out)
    np.multiply(out, top_diff, out=out)


def eltwise_sum(bottoms, coeffs, out):
    """out = sum_i coeffs[i] * b_i: Caffe zeroes the top, then one axpy per bottom."""
    out[...] = 0
    for b, c in zip(bottoms, coeffs):
        axpy(c, b, out)


def eltwise_max(bottoms, out, mask):
    """out = max_i b_i; mask = the winning bottom index.

    Caffe takes bottom 0 only where it is strictly greater than bottom 1, and a later bottom
    only where it is strictly greater than the running max: ties go to bottom 1, then stay.
    """
    a, b = bottoms[0], bottoms[1]
    win = np.greater(a, b)
    # two disjoint masked copies: correct even when `out` is bottom 0 or 1 (in place)
    np.copyto(out, b, where=~win)
    np.copyto(out, a, where=win)
    np.subtract(1, win, out=mask, casting="unsafe")
    for idx in range(2, len(bottoms)):
        c = bottoms[idx]
        np.greater(c, out, out=win)
        np.copyto(out, c, where=win)
        np.copyto(mask, idx, where=win)


def eltwise_max_grad(mask, i, top_diff, out):
    """top_diff where bottom i won the max, else 0."""
    won = mask == i
    np.copyto(out, top_diff, where=won)
    np.copyto(out, 0, where=~won)
