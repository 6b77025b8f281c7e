"""BlobProto <-> NumPy, as Caffe's Blob::FromProto and Blob::ToProto.

Reading: the shape is the legacy 4-d (num, channels, height, width) when any of those four is
set (unset ones count 0), else `shape.dim` (no dims: a 0-axis blob of one value). Values come
from `double_data` when it has any, else from `data`, else from NVCaffe's typed `raw_data`
(when the proto has that field); the diff likewise from `double_diff`, `diff`, `raw_diff`.
That is NVCaffe 0.16/0.17's Blob::FromProto order; caffe-jacinto 0.16/0.17 caffemodels keep
their blobs in `raw_data` (FLOAT, or FLOAT16 from fp16 training) unless written in the old
format. The raw bytes are the writer's memory, little-endian on every host NVCaffe ran on,
and their type is `raw_data_type` (`raw_diff_type`), which must be set. FLOAT, FLOAT16 and
DOUBLE are what NVCaffe reads; INT (int32) and UINT (uint32) we read too, as numbers, where
NVCaffe stops with "Unsupported raw type". The number of values must equal the shape's count.

Writing: `shape` (omitted for a 0-axis array, as Caffe omits it) and the values as packed
float (`data`/`diff`) or double (`double_data`/`double_diff`). The packed bytes are built with
NumPy and merged in one call: extending a repeated field value by value costs seconds on a
60M-parameter net.
"""
import numpy as np

from ..errors import CaffeError

_LEGACY = ("num", "channels", "height", "width")

# caffe.Type value -> the NumPy type of its raw bytes (NVCaffe's tsize: 8, 4, 2, 4, 4 bytes).
_RAW_DTYPES = {0: "<f8", 1: "<f4", 2: "<f2", 3: "<i4", 4: "<u4"}
# which -> NVCaffe's (bytes field, type field)
_RAW_FIELDS = {"data": ("raw_data", "raw_data_type"), "diff": ("raw_diff", "raw_diff_type")}


def _pb2():
    from ..proto import caffe_pb2
    return caffe_pb2


def blob_shape(bp):
    """The shape Caffe gives BlobProto `bp` (tuple of ints)."""
    if any(bp.HasField(f) for f in _LEGACY):
        return (bp.num, bp.channels, bp.height, bp.width)
    return tuple(bp.shape.dim)


def blob_proto_to_array(bp, which="data", dtype=None, name=None):
    """The `which` ("data" or "diff") values of BlobProto `bp` as an array of its shape.

    dtype None keeps the stored precision (float32 for data/diff and the FLOAT, FLOAT16, INT
    and UINT raw types, float64 for the double fields and raw DOUBLE). For "diff", returns
    None when the proto has no diff. `name` labels errors.
    """
    if which not in ("data", "diff"):
        raise ValueError(f"which must be 'data' or 'diff', not {which!r}")
    doubles, floats = getattr(bp, "double_" + which), getattr(bp, which)
    shape = blob_shape(bp)
    if any(d < 0 for d in shape):
        raise CaffeError(f"{name or 'blob'}: negative dimension in shape {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    if len(doubles):
        values = np.array(doubles, dtype=np.float64)
    elif len(floats):
        values = np.array(floats, dtype=np.float32)
    elif bp.HasField(_RAW_FIELDS[which][0]):
        values = _raw_values(bp, which, name)
    elif which == "data":
        values = np.zeros(0, dtype=np.float32)
    else:
        return None
    if values.size != count:
        raise CaffeError(f"{name or 'blob'}: {values.size} {which} values for shape "
                         f"{list(shape)} ({count} values)")
    values = values.reshape(shape)
    if dtype is not None and values.dtype != dtype:
        values = values.astype(dtype)
    return values


def _raw_values(bp, which, name):
    """NVCaffe's typed raw bytes `raw_<which>` as an array: float64 for DOUBLE, float32
    otherwise (FLOAT16 widens exactly; INT/UINT become the nearest float32)."""
    raw_field, type_field = _RAW_FIELDS[which]
    where = f"{name or 'blob'}: BlobProto.{type_field}"
    if not bp.HasField(type_field):
        raise CaffeError(f"{where} is missing ({raw_field} needs its type)")
    code = getattr(bp, type_field)
    if code not in _RAW_DTYPES:
        raise CaffeError(f"{where} {code} is not a storage type (DOUBLE, FLOAT, FLOAT16, "
                         f"INT, UINT)")
    raw_type = np.dtype(_RAW_DTYPES[code])
    raw = getattr(bp, raw_field)
    if len(raw) % raw_type.itemsize:
        raise CaffeError(f"{name or 'blob'}: BlobProto.{raw_field} holds {len(raw)} bytes, "
                         f"not a whole number of {raw_type.itemsize}-byte values")
    values = np.frombuffer(raw, dtype=raw_type)
    return values.astype(np.float64 if code == 0 else np.float32)


def array_to_blob_proto(data, diff=None, double=False, out=None):
    """A BlobProto holding `data` (and `diff`), as Blob::ToProto writes it.

    `double` writes double_data/double_diff instead of data/diff. `out` (a BlobProto) is
    cleared and filled instead of a new one.
    """
    bp = _pb2().BlobProto() if out is None else out
    bp.Clear()
    data = np.asarray(data)
    if data.ndim:
        bp.shape.dim.extend(int(d) for d in data.shape)
    names = ("double_data", "double_diff") if double else ("data", "diff")
    chunks = [_packed(bp, names[0], data, double)]
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != data.shape:
            raise ValueError(f"diff shape {diff.shape} differs from data shape {data.shape}")
        chunks.append(_packed(bp, names[1], diff, double))
    payload = b"".join(chunks)
    if payload:
        bp.MergeFromString(payload)
    return bp


def _packed(bp, field, values, double):
    """Wire bytes of `values` as the packed repeated float/double `field` of `bp`."""
    raw = np.ascontiguousarray(values, dtype="<f8" if double else "<f4").tobytes()
    if not raw:
        return b""
    number = bp.DESCRIPTOR.fields_by_name[field].number
    return encode_varint((number << 3) | 2) + encode_varint(len(raw)) + raw


def encode_varint(n):
    """Protobuf's base-128 varint encoding of a non-negative int."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
