"""How many bytes of lowered image one convolution worker builds at once.

A worker lowers a chunk of its share of the batch, multiplies it and transposes the result;
the chunk should stay in the last-level cache between those steps, yet be wide enough for
BLAS to run at its best rate. Where that balance lies follows the size of the last-level
cache, measured on the two machine kinds this project runs on (forward and backward of
cifar10_quick, miniVggNet and CaffeNet convolutions, chunk limits 1-256 MB):

* AMD EPYC, 32 MiB L3: 4 MB fastest; 2, 8 and 16 MB slower.
* Intel Xeon, 480 MiB L3: 16-64 MB fastest (alike within the noise), 10-25% faster than 4 MB;
  256 MB slower again.

So the limit is an eighth of the L3 cache, kept between 4 and 16 MB (4 MB where the cache
size is unknown): past 16 MB only memory grows, by the chunk on every worker.
CAFFE_LITE_CONV_WORKSPACE_MB sets it instead.
"""
import functools
import os

from ..errors import CaffeError

ENV = "CAFFE_LITE_CONV_WORKSPACE_MB"
SMALLEST = 4 << 20
LARGEST = 16 << 20
CACHES = "/sys/devices/system/cpu/cpu0/cache"


def parse_cache_size(text):
    """Bytes of a sysfs cache size such as '32768K' or '480M'; None if unreadable."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale if digits.isdigit() else None


@functools.lru_cache(maxsize=None)
def last_level_cache_bytes():
    """Size of the largest cache level of CPU 0 (Linux sysfs); None where unknown."""
    best = None
    try:
        entries = os.listdir(CACHES)
    except OSError:
        return None
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(os.path.join(CACHES, entry, "size")) as f:
                size = parse_cache_size(f.read())
        except OSError:
            continue
        if size and (best is None or size > best):
            best = size
    return best


def limit_for_cache(cache_bytes):
    """The chunk limit for a last-level cache of cache_bytes (None: unknown)."""
    if not cache_bytes:
        return SMALLEST
    return min(LARGEST, max(SMALLEST, cache_bytes // 8))


def workspace_limit():
    """Bytes of one worker's lowered chunk: CAFFE_LITE_CONV_WORKSPACE_MB, else from the
    cache size."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return limit_for_cache(last_level_cache_bytes())
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value > 1 << 20:
        raise CaffeError(f"{ENV} must be a size in MiB > 0, got '{text}'")
    return int(value * (1 << 20))
