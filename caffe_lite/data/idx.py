"""The IDX format of MNIST and Fashion-MNIST (gzip or plain)."""
import gzip
import hashlib
import struct

import numpy as np

from ..errors import CaffeError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path):
    """(file bytes, decompressed bytes)."""
    try:
        with open(path, "rb") as f:
            stored = f.read()
    except OSError as err:
        raise CaffeError(f"{path}: {err.strerror}") from None
    raw = stored
    if stored[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(stored)
        except (OSError, EOFError) as err:
            raise CaffeError(f"{path}: bad or truncated gzip data ({err})") from None
    return stored, raw


def parse_idx(raw, path="<idx>"):
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise CaffeError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CaffeError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != need:
        raise CaffeError(f"{path}: IDX data is {len(raw) - header} bytes, the header "
                         f"promises {need} (truncated or corrupt)")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def read_idx(path, md5s=None):
    """Array from an IDX file. `md5s`: accepted MD5 sums, of the file as stored or of its
    decompressed content (mirrors recompress the .gz, which changes only the former)."""
    stored, raw = read_idx_bytes(path)
    if md5s:
        got = {hashlib.md5(stored).hexdigest(), hashlib.md5(raw).hexdigest()}
        if not got & set(md5s):
            raise CaffeError(f"{path}: MD5 {hashlib.md5(raw).hexdigest()} does not match the "
                             f"official file ({', '.join(sorted(md5s))})")
    return parse_idx(raw, path)
