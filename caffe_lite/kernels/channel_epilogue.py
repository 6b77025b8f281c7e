"""A per-channel epilogue that a convolution applies to its top as it writes it: what a
BatchNorm with stored statistics, the learned Scale after it and a ReLU after that do to
each value, when all three compute in place on the convolution's top (MobileNet's and
JacintoNet's conv -> BatchNorm -> ReLU, ResNet's conv -> BatchNorm -> Scale -> ReLU).

For output channel c, a value v of the convolution (its bias already added) becomes

    v = (v - mean[c]) / std[c]        BVLC (divide), or (v - mean[c]) * inv_std[c] (NVCaffe)
    v = v * scale[c]                  with a scale (NVCaffe's scale_bias, or a Scale layer)
    v = v + bias[c]                   with a bias
    v = max(v, 0) + slope * min(v, 0) with a ReLU

the BatchNorm kernel's own operations in its order (kernels/batch_norm.py), so the top holds
the bits the separate layers would write. Applied where the convolution has just written a
run of values (a depthwise plane, a tile's write-back), or after each worker's product
where BLAS writes them. What it saves is smaller than the passes' 2.4 ms of MobileNet's
23 ms TEST forward at batch 8: those passes read values still in L2 or L3, and the
arithmetic costs the same inside the convolution; JacintoNet11 at batch 1 1.5-2% faster,
the larger batches level (docs/benchmarks.md).

The kernels take the epilogue as one tuple `epi` = (ep, mode, slope): ep a (4, C) array of
mean, std or inv_std, scale and bias in the top's dtype, mode the bits below (0: no epilogue,
ep empty), slope the ReLU's negative slope in the top's dtype.
"""
from typing import NamedTuple

import numpy as np
from numba import njit, uint64 as U

from . import batch_norm
from .jit import kernel
from .neuron import _leaky

#: mode bits; a scale and bias the layers do not have are 1 and -0.0 in ep (x * 1 and
#: x + -0.0 are x, bit for bit, signed zeros included), so that the loops test only these
ACTIVE, DIVIDE, RELU = 1, 2, 4


class ChannelEpilogue(NamedTuple):
    ep: np.ndarray          # (4, C): mean, std (DIVIDE) or inv_std, scale, bias
    mode: int
    slope: np.generic

    @classmethod
    def make(cls, mean, factor, divide, scale=None, bias=None, relu_slope=None):
        """From BatchNorm's statistics (factor: std with divide, else inv_std), an optional
        per-channel scale and bias, and a ReLU's negative slope (None: no ReLU)."""
        dt = mean.dtype
        ep = np.empty((4, mean.size), dt)
        ep[0], ep[1] = mean, factor
        ep[2] = scale if scale is not None and scale.size else 1
        ep[3] = bias if bias is not None and bias.size else -0.0
        mode = ACTIVE | (DIVIDE if divide else 0) | (RELU if relu_slope is not None else 0)
        return cls(ep, mode, dt.type(0 if relu_slope is None else relu_slope))

    @property
    def args(self):
        """The kernels' `epi` tuple."""
        return self.ep, self.mode, self.slope

    @staticmethod
    def none(dtype):
        """The kernels' `epi` tuple for no epilogue."""
        dtype = np.dtype(dtype)
        if dtype not in _NONE:
            _NONE[dtype] = (np.empty((4, 0), dtype), 0, dtype.type(0))
        return _NONE[dtype]

    def apply(self, y):
        """The epilogue over the whole top y (N, C, ...) in its own pass: the paths that
        cannot apply it as they write."""
        batch_norm.split_images(_channels, 2 * y.size, (_view(y), self.args), (0,))

    def apply_images(self, y, lo, hi, bias=None):
        """The epilogue over images lo..hi of y (N, C, ...) on the calling thread, after
        adding the convolution's bias (None: none) in the same pass."""
        b = self.ep[0, :0] if bias is None else bias
        _images_with_bias(_view(y), b, self.args, lo, hi)

    def apply_channels(self, y, lo, hi):
        """The epilogue over channels lo..hi of every image of y, on the calling thread."""
        _channels(_view(y), self.args, lo, hi)

    def of_values(self, values):
        """Each channel's one value values[c] through the epilogue (channels whose every
        output is a constant: a sparse layer's all-zero filters)."""
        out = np.array(values, self.ep.dtype).reshape(1, -1, 1)
        _channels(out, self.args, 0, out.shape[1])
        return out.reshape(-1)


_NONE = {}


def _view(y):
    """y (N, C, ...) as (N, C, S), the same memory (the epilogue writes it in place)."""
    if not y.flags.c_contiguous:
        raise ValueError("a channel epilogue needs a C-contiguous top")
    return y.reshape(y.shape[0], y.shape[1], -1)


@njit(inline="always")
def finish_run(yf, start, count, c, epi):
    """yf[start:start + count], values of channel c, through the epilogue in place (nothing
    with mode 0): BatchNorm's (v - mean) / std or (v - mean) * inv_std (its
    batch_norm.normalized_value), * scale + bias, then ReLU's forward. The tests pick one of
    four loops, each with its flags as constants, so that each runs on vectors; with the
    tests inside one loop, LLVM kept it scalar and the fused pass was slower than the
    separate ones."""
    ep, mode, slope = epi
    if not mode:
        return
    lo, m, f, s, b = U(start), ep[0, c], ep[1, c], ep[2, c], ep[3, c]
    if mode & DIVIDE:
        if mode & RELU:
            _run(yf, lo, count, m, f, s, b, slope, True, True)
        else:
            _run(yf, lo, count, m, f, s, b, slope, True, False)
    elif mode & RELU:
        _run(yf, lo, count, m, f, s, b, slope, False, True)
    else:
        _run(yf, lo, count, m, f, s, b, slope, False, False)


@njit(inline="always")
def _run(yf, lo, count, m, f, s, b, slope, divide, relu):
    zero = yf.dtype.type(0)
    for i in range(count):
        v = batch_norm.normalized_value(yf[lo + U(i)], m, f, divide) * s + b
        yf[lo + U(i)] = _leaky(v, zero, slope) if relu else v


@kernel(nogil=True)
def _channels(y, epi, lo, hi):
    for n in range(y.shape[0]):
        for c in range(lo, hi):
            row = y[n, c]
            finish_run(row, 0, row.size, c, epi)


@kernel(nogil=True)
def _images_with_bias(y, bias, epi, lo, hi):
    for n in range(lo, hi):
        for c in range(y.shape[1]):
            row = y[n, c]
            if bias.size:
                b = bias[c]
                for i in range(row.size):
                    row[i] += b
            finish_run(row, 0, row.size, c, epi)
