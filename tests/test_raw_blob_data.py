"""NVCaffe's typed raw blob storage (BlobProto raw_data / raw_data_type / raw_diff /
raw_diff_type), as caffe-jacinto 0.16/0.17 caffemodels hold their weights.

The bytes are written out by hand (little-endian IEEE), so the test checks the byte order
and the type codes, not NumPy against itself.
"""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.io.blobs import blob_proto_to_array
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

# 1.0, -2.0, 0.5 as IEEE half (0x3C00, 0xC000, 0x3800), low byte first
HALF_BYTES = b"\x00\x3c\x00\xc0\x00\x38"
# 1.0 and -2.0 as IEEE single (0x3F800000, 0xC0000000)
FLOAT_BYTES = b"\x00\x00\x80\x3f\x00\x00\x00\xc0"
# 0.5 as IEEE double (0x3FE0000000000000)
DOUBLE_BYTES = b"\x00\x00\x00\x00\x00\x00\xe0\x3f"


def raw_blob(shape, raw, raw_type, **extra):
    bp = caffe_pb2.BlobProto(raw_data=raw, raw_data_type=raw_type, **extra)
    bp.shape.dim.extend(shape)
    return bp


@pytest.mark.parametrize("raw, raw_type, expected, dtype", [
    (HALF_BYTES, caffe_pb2.FLOAT16, [1.0, -2.0, 0.5], np.float32),
    (FLOAT_BYTES, caffe_pb2.FLOAT, [1.0, -2.0], np.float32),
    (DOUBLE_BYTES, caffe_pb2.DOUBLE, [0.5], np.float64),
    (b"\xff\xff\xff\xff\x07\x00\x00\x00", caffe_pb2.INT, [-1, 7], np.float32),
    # 0x80000000: 2**31 unsigned (it would be -2**31 as INT)
    (b"\x00\x00\x00\x80", caffe_pb2.UINT, [2.0 ** 31], np.float32),
])
def test_raw_types(raw, raw_type, expected, dtype):
    values = blob_proto_to_array(raw_blob([len(expected)], raw, raw_type))
    assert values.dtype == dtype
    np.testing.assert_array_equal(values, expected)


def test_raw_diff_and_shape():
    bp = raw_blob([1, 3], HALF_BYTES, caffe_pb2.FLOAT16, raw_diff=FLOAT_BYTES[:4] * 3,
                  raw_diff_type=caffe_pb2.FLOAT)
    np.testing.assert_array_equal(blob_proto_to_array(bp), [[1.0, -2.0, 0.5]])
    np.testing.assert_array_equal(blob_proto_to_array(bp, "diff"), [[1.0, 1.0, 1.0]])
    assert blob_proto_to_array(raw_blob([3], HALF_BYTES, caffe_pb2.FLOAT16), "diff") is None


def test_packed_values_win_over_raw_as_in_nvcaffe():
    bp = raw_blob([2], FLOAT_BYTES, caffe_pb2.FLOAT)
    bp.data.extend([3.0, 4.0])
    np.testing.assert_array_equal(blob_proto_to_array(bp), [3.0, 4.0])
    bp.double_data.extend([5.0, 6.0])
    np.testing.assert_array_equal(blob_proto_to_array(bp), [5.0, 6.0])


def test_missing_type_and_bad_lengths_are_errors():
    bp = caffe_pb2.BlobProto(raw_data=FLOAT_BYTES)
    bp.shape.dim.append(2)
    with pytest.raises(CaffeError, match="w: BlobProto.raw_data_type is missing"):
        blob_proto_to_array(bp, name="w")
    with pytest.raises(CaffeError, match="raw_data holds 6 bytes, not a whole number of "
                                         "4-byte values"):
        blob_proto_to_array(raw_blob([2], HALF_BYTES, caffe_pb2.FLOAT))
    with pytest.raises(CaffeError, match=r"3 data values for shape \[2\]"):
        blob_proto_to_array(raw_blob([2], HALF_BYTES, caffe_pb2.FLOAT16))


def test_net_loads_a_float16_caffemodel_layer():
    net = Net(param=text_format.Parse(
        'layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 3 } } }',
        caffe_pb2.NetParameter()))
    model = caffe_pb2.NetParameter()
    model.layer.add(name="w").blobs.add().CopyFrom(
        raw_blob([3], HALF_BYTES, caffe_pb2.FLOAT16))
    net.copy_trained_layers_from(model)
    np.testing.assert_array_equal(net.params["w"][0].data, [1.0, -2.0, 0.5])
