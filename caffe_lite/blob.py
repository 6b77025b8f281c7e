"""Blob: an N-d array of data and a same-shaped array of gradients (Caffe's Blob<Dtype>).

`data` and `diff` are C-contiguous NumPy arrays of `shape`. Layers write their outputs into
them in place (kernels take `out=` arrays), so a pycaffe script that keeps a reference to
`net.blobs['x'].data` sees every later forward. `share_data` / `share_diff` alias another
blob's memory the way Caffe's ShareData does (Split, Flatten, Reshape use it).
"""
import math

import numpy as np

from . import memory_guard


class Blob:
    __slots__ = ("_data", "_diff", "dtype", "__weakref__")

    def __init__(self, shape=(), dtype=np.float32):
        self.dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        memory_guard.charge(2 * _nbytes(shape, self.dtype))
        self._data = np.zeros(shape, self.dtype)
        self._diff = np.zeros(shape, self.dtype)

    # --- shape -----------------------------------------------------------------------------
    @property
    def shape(self):
        return self._data.shape

    @property
    def count(self):
        return self._data.size

    @property
    def num_axes(self):
        return self._data.ndim

    def canonical_axis(self, axis):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        n = self._data.ndim
        if not -n <= axis < max(n, 1):
            raise IndexError(f"axis {axis} out of range for a {n}-axis blob {self.shape}")
        return axis + n if axis < 0 else axis

    def count_range(self, start, end=None):
        """Product of dims in [start, end): Caffe's count(start, end)."""
        return math.prod(self._data.shape[start:end])

    def reshape(self, *shape):
        """Resize to `shape`; keeps the arrays when the shape is unchanged."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
            if type(shape) is tuple and shape == self._data.shape:
                return          # every layer's reshape, every pass: the common case first
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"blob shape must be non-negative, got {shape}")
        if shape == self._data.shape:
            return
        if math.prod(shape) == self._data.size:
            self._data = self._data.reshape(shape)
            self._diff = self._diff.reshape(shape)
        else:
            memory_guard.charge(2 * (_nbytes(shape, self.dtype) - self._data.nbytes))
            self._data = np.zeros(shape, self.dtype)
            self._diff = np.zeros(shape, self.dtype)

    def reshape_like(self, other):
        self.reshape(other.shape)

    # --- data / diff -----------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        np.copyto(self._data, value, casting="unsafe")

    @property
    def diff(self):
        return self._diff

    @diff.setter
    def diff(self, value):
        np.copyto(self._diff, value, casting="unsafe")

    def share_data(self, other):
        """Alias `other`'s data memory under this blob's shape (counts must match)."""
        if other.count != self.count:
            raise ValueError(f"share_data: count mismatch {other.shape} vs {self.shape}")
        self._data = other._data.reshape(self.shape)

    def share_diff(self, other):
        if other.count != self.count:
            raise ValueError(f"share_diff: count mismatch {other.shape} vs {self.shape}")
        self._diff = other._diff.reshape(self.shape)

    def set_arrays(self, data, diff=None):
        """Adopt arrays directly (used when loading and by layers that own their outputs)."""
        self._data = np.ascontiguousarray(data, self.dtype)
        self._diff = (np.zeros_like(self._data) if diff is None
                      else np.ascontiguousarray(diff, self.dtype))

    def update(self):
        """data -= diff (Caffe's Blob::Update)."""
        self._data -= self._diff

    def asum_data(self):
        return float(np.abs(self._data).sum())

    def asum_diff(self):
        return float(np.abs(self._diff).sum())

    def sumsq_data(self):
        return float(np.dot(self._data.ravel(), self._data.ravel()))

    def sumsq_diff(self):
        return float(np.dot(self._diff.ravel(), self._diff.ravel()))

    def __repr__(self):
        return f"Blob(shape={self.shape}, dtype={self.dtype})"


def _nbytes(shape, dtype):
    """Bytes of an array of `shape` (Python ints: no overflow for absurd shapes)."""
    count = 1
    for d in shape:
        count *= max(int(d), 0)
    return count * dtype.itemsize
