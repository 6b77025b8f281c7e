"""Datum <-> image arrays, as Caffe's io.cpp (DatumToCVMat, CVMatToDatum, DecodeDatum)."""
import io

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import CaffeError
from ..proto import caffe_pb2


def datum_from_bytes(value):
    """The Datum a database record holds, or a CaffeError saying the record is not one (the
    caller adds the database and the record)."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except (DecodeError, RuntimeError, ValueError):
        raise CaffeError(f"not a Datum ({len(value)} bytes that do not parse as one)") \
            from None
    return datum


def raw_datum_shape(datum):
    """(C, H, W) of an unencoded datum, checked: every extent positive and the pixels (data
    or float_data) exactly C*H*W; else a CaffeError saying what is wrong."""
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise CaffeError(f"datum has channels {shape[0]}, height {shape[1]}, width "
                         f"{shape[2]}: each must be positive")
    size = len(datum.data) if datum.data else len(datum.float_data)
    if size == 0:
        raise CaffeError("datum holds neither data nor float_data")
    if size != shape[0] * shape[1] * shape[2]:
        raise CaffeError(f"datum of shape {shape} holds {size} values")
    return shape


def datum_to_array(datum, force_color=False, force_gray=False):
    """(C, H, W) array of the datum's pixels: uint8 for raw/encoded data, float32 for float_data."""
    if datum.encoded:
        return decode_image(datum.data, force_color, force_gray)
    shape = raw_datum_shape(datum)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    return np.asarray(datum.float_data, np.float32).reshape(shape)


def decode_image(data, force_color=False, force_gray=False):
    """Decode JPEG/PNG bytes to (C, H, W) uint8 in Caffe's BGR channel order."""
    from PIL import Image
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise CaffeError(f"cannot decode image: {err}") from None
    return image_to_chw(img, force_color, force_gray)


def image_to_chw(img, force_color=False, force_gray=False):
    """A PIL image as (C, H, W) uint8, BGR for colour (OpenCV's order, which Caffe keeps)."""
    gray = force_gray or (img.mode in ("L", "1", "I;16", "I", "F") and not force_color)
    if gray:
        return np.asarray(img.convert("L"), np.uint8)[None, :, :]
    rgb = np.asarray(img.convert("RGB"), np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def array_to_datum(arr, label=0):
    """A raw (C, H, W) uint8 datum (Caffe's CVMatToDatum / create_mnist layout)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, np.float32).ravel().tolist())
    datum.label = int(label)
    return datum


def encoded_datum(image_bytes, label=0):
    datum = caffe_pb2.Datum()
    datum.data = image_bytes
    datum.encoded = True
    datum.label = int(label)
    return datum
