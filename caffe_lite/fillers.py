"""Caffe's fillers (include/caffe/filler.hpp): fill a blob from a FillerParameter.

FillerParameter fields and defaults: type "constant", value 0, min 0, max 1, mean 0, std 1,
sparse -1, variance_norm FAN_IN.

  constant           x = value
  uniform            x ~ U(min, max)
  gaussian           x ~ N(mean, std^2); with sparse >= 0, each x is kept with probability
                     p = sparse / shape[0] (a Bernoulli mask) and zeroed otherwise
  positive_unitball  x ~ U(0, 1), then each row (shape[0] rows) scaled to sum 1
  xavier             x ~ U(-a, a), a = sqrt(3 / n)
  msra               x ~ N(0, 2 / n)
  bilinear           the bilinear upsampling kernel (4-d, square)
For xavier and msra, n is fan_in = count / shape[0], fan_out = count / shape[1] (count for a
1-d blob) or their average, by variance_norm. Only gaussian supports `sparse`; the others
reject it, as Caffe does. Random draws come from caffe_lite.common.rng().
"""
import math

import numpy as np

from .blob import Blob
from .common import rng
from .errors import CaffeError

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2


def _array(target):
    return target.data if isinstance(target, Blob) else target


def _float(arr):
    # Draw in the blob's own precision: float32 draws halve the memory and time of big fills.
    return arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _uniform_draw(lo, hi, arr):
    values = rng().random(arr.shape, dtype=_float(arr))
    values *= hi - lo
    values += lo
    return values


def _normal_draw(mean, std, arr):
    values = rng().standard_normal(arr.shape, dtype=_float(arr))
    values *= std
    values += mean
    return values


def _no_sparse(param):
    if param.sparse != -1:
        raise CaffeError(f"filler '{param.type}': sparsity is not supported by this filler "
                         f"(sparse: {param.sparse})")


def _fans(arr):
    count = arr.size
    if arr.ndim == 0:
        return count, count
    fan_in = count // arr.shape[0]
    fan_out = count // arr.shape[1] if arr.ndim > 1 else count
    return fan_in, fan_out


def _norm(arr, param):
    fan_in, fan_out = _fans(arr)
    if param.variance_norm == AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _check_count(arr, param):
    if arr.size == 0:
        raise CaffeError(f"filler '{param.type}': cannot fill an empty blob {arr.shape}")


def _constant(arr, param):
    _check_count(arr, param)
    arr[...] = param.value
    _no_sparse(param)


def _uniform(arr, param):
    _check_count(arr, param)
    if param.min > param.max:
        raise CaffeError(f"uniform filler: min ({param.min}) must not exceed max ({param.max})")
    arr[...] = _uniform_draw(param.min, param.max, arr)
    _no_sparse(param)


def _gaussian(arr, param):
    _check_count(arr, param)
    if not param.std > 0:
        raise CaffeError(f"gaussian filler: std must be positive, got {param.std}")
    values = _normal_draw(param.mean, param.std, arr)
    if param.sparse < -1:
        raise CaffeError(f"gaussian filler: sparse must be >= -1, got {param.sparse}")
    if param.sparse >= 0:
        # Caffe's sparse init is for weight matrices: `sparse` is the mean number of
        # non-zero weights per output, and outputs are the first axis.
        if arr.ndim < 1:
            raise CaffeError("gaussian filler: sparse needs a blob with at least one axis")
        p = param.sparse / arr.shape[0]
        if not 0.0 <= p <= 1.0:
            raise CaffeError(f"gaussian filler: sparse ({param.sparse}) / outputs "
                             f"({arr.shape[0]}) must be a probability in [0, 1]")
        values *= rng().random(arr.shape, dtype=_float(arr)) < p
    arr[...] = values


def _positive_unitball(arr, param):
    _check_count(arr, param)
    values = _uniform_draw(0.0, 1.0, arr)
    num = arr.shape[0] if arr.ndim else 1
    rows = values.reshape(num, -1)
    rows /= rows.sum(axis=1, keepdims=True)
    arr[...] = values
    _no_sparse(param)


def _xavier(arr, param):
    _check_count(arr, param)
    scale = math.sqrt(3.0 / _norm(arr, param))
    arr[...] = _uniform_draw(-scale, scale, arr)
    _no_sparse(param)


def _msra(arr, param):
    _check_count(arr, param)
    std = math.sqrt(2.0 / _norm(arr, param))
    arr[...] = _normal_draw(0.0, std, arr)
    _no_sparse(param)


def _bilinear(arr, param):
    if arr.ndim != 4:
        raise CaffeError(f"bilinear filler: blob must be 4-d, got shape {arr.shape}")
    height, width = arr.shape[2], arr.shape[3]
    if height != width:
        raise CaffeError(f"bilinear filler: filter must be square, got {height}x{width}")
    f = math.ceil(width / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(width, dtype=np.float64)
    k = 1 - np.abs(x / f - c)
    arr[...] = np.outer(k, k)
    _no_sparse(param)


FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(target, param):
    """Fill a Blob's data (or an ndarray) in place from a FillerParameter; returns the array."""
    arr = _array(target)
    try:
        filler = FILLERS[param.type]
    except KeyError:
        raise CaffeError(f"Unknown filler name: {param.type} (known fillers: "
                         f"{', '.join(sorted(FILLERS))})") from None
    filler(arr, param)
    return arr
