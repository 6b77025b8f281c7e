# --- pycaffe's caffe.io conversions (`import caffe_lite as caffe; caffe.io....`) ------------
from .blobs import array_to_blob_proto as _array_to_blob_proto
from .blobs import blob_proto_to_array as _blob_proto_to_array


def blobproto_to_array(blob, return_diff=False):
    """pycaffe's caffe.io.blobproto_to_array: the data (or, with return_diff, the diff) of a
    BlobProto as an array of its shape (the legacy 4-d shape when num/channels/... are set)."""
    if return_diff:
        return _blob_proto_to_array(blob, "diff")
    return _blob_proto_to_array(blob)


def array_to_blobproto(arr, diff=None):
    """pycaffe's caffe.io.array_to_blobproto: an N-d array (and its diff) as a BlobProto."""
    return _array_to_blob_proto(arr, diff)
