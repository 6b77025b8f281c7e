"""compute_image_mean: the per-pixel mean of every image in a database (Caffe's tool)."""
import numpy as np

from ..errors import CaffeError
from .datum import datum_from_bytes, datum_to_array


def compute_mean(items, chunk=1024):
    """Mean (C, H, W) float64 over an iterable of serialized Datums."""
    total = None
    count = 0
    buf = []

    def flush():
        nonlocal total
        if not buf:
            return
        stacked = np.stack(buf).astype(np.float64)
        part = stacked.sum(axis=0)
        if total is None:
            total = part
        elif total.shape != part.shape:
            raise CaffeError(f"images differ in shape ({total.shape} vs {part.shape}); "
                             "the mean needs one size")
        else:
            total += part
        buf.clear()

    for record, value in enumerate(items):
        try:
            arr = datum_to_array(datum_from_bytes(value))
        except CaffeError as err:
            raise CaffeError(f"record #{record} (in key order): {err}") from None
        if buf and arr.shape != buf[0].shape:
            raise CaffeError(f"images differ in shape ({buf[0].shape} vs {arr.shape}); "
                             "the mean needs one size")
        buf.append(arr)
        count += 1
        if len(buf) == chunk:
            flush()
    flush()
    if count == 0:
        raise CaffeError("the database is empty")
    return total / count


def mean_blob_proto(mean):
    """BlobProto in Caffe's compute_image_mean layout (legacy 1 x C x H x W)."""
    from ..proto import caffe_pb2
    bp = caffe_pb2.BlobProto()
    bp.num = 1
    bp.channels, bp.height, bp.width = mean.shape
    bp.data.extend(np.asarray(mean, np.float32).ravel().tolist())
    return bp
