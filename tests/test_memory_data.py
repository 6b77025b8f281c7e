"""MemoryData: reset / set_input_arrays (untransformed), add_mat_vector (transformed)."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.blob import Blob
from caffe_lite.common import TEST
from caffe_lite.data.datum import array_to_datum
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from caffe_lite.layers.memory_data import set_input_arrays
from caffe_lite.proto import caffe_pb2


def _layer(transform=""):
    net = caffe_pb2.NetParameter()
    text_format.Parse(f"""layer {{ name: "m" type: "MemoryData" top: "data" top: "label"
        transform_param {{ {transform} }}
        memory_data_param {{ batch_size: 2 channels: 1 height: 2 width: 3 }} }}""", net)
    layer = create_layer(net.layer[0], TEST)
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


def test_reset_serves_batches_untransformed_and_wraps():
    layer, top = _layer("scale: 0.5")
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], np.float32).reshape(4, 1, 1, 1)
    layer.reset(data, labels, 4)
    seen = []
    for _ in range(3):
        layer.forward([], top)
        seen.append((top[0].data.copy(), top[1].data.copy()))
    np.testing.assert_array_equal(seen[0][0], data[:2])
    np.testing.assert_array_equal(seen[1][1], [7, 8])
    np.testing.assert_array_equal(seen[2][0], data[:2])


def test_add_mat_vector_applies_the_transformer():
    layer, top = _layer("scale: 0.5 mean_value: 1")
    images = np.arange(2 * 6, dtype=np.uint8).reshape(2, 1, 2, 3)
    layer.add_mat_vector(images, [3, 4])
    with pytest.raises(CaffeError, match="consumed"):
        layer.add_mat_vector(images, [3, 4])
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, (images.astype(np.float32) - 1) * 0.5)
    np.testing.assert_array_equal(top[1].data, [3, 4])
    layer.add_datum_vector([array_to_datum(images[1], 9), array_to_datum(images[0], 8)])
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0], (images[1].astype(np.float32) - 1) * 0.5)


class _FakeNet:
    def __init__(self, layers):
        self.layers = layers


def test_set_input_arrays_checks_like_pycaffe():
    layer, top = _layer()
    with pytest.raises(CaffeError, match="initialized by calling Reset"):
        layer.forward([], top)
    data = np.ones((2, 1, 2, 3), np.float32)
    set_input_arrays(_FakeNet([layer]), data, np.array([1.0, 2.0], np.float32))
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [1, 2])
    with pytest.raises(CaffeError, match="first layer is a MemoryDataLayer"):
        set_input_arrays(_FakeNet([object()]), data, np.zeros(2))
    with pytest.raises(CaffeError, match="multiple of batch size"):
        set_input_arrays(_FakeNet([layer]), data[:1], np.zeros(1))
    with pytest.raises(CaffeError, match="same first dimension"):
        set_input_arrays(_FakeNet([layer]), data, np.zeros(4))
    with pytest.raises(CaffeError, match="expected"):
        layer.reset(np.ones((2, 3, 2, 3), np.float32), np.zeros(2))


def test_net_set_input_arrays_feeds_a_real_net(tmp_path):
    import caffe_lite as caffe
    path = tmp_path / "net.prototxt"
    path.write_text("""
layer { name: "d" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }
""")
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    out = net.forward()
    np.testing.assert_allclose(out["ip"].ravel(), data[:2].sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    out = net.forward()
    np.testing.assert_allclose(out["ip"].ravel(), data[2:].sum(axis=(1, 2, 3)))
