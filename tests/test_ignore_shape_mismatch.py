"""caffe-jacinto's lenient weight loading: SolverParameter.ignore_shape_mismatch (0.16/0.17)
and ignore_mismatching_blobs (G1/G2), honoured only when the solver file sets them.

The net: InnerProduct 'ip' (3 -> 2: weight 2x3, bias 2, bias filler 7) and an NVCaffe
BatchNorm 'bn' with scale_bias (5 blobs). The caffemodel is written by hand: ip's weight
stored as 3x2 (same 6 values), its bias with 3 values, and a BVLC 3-blob BatchNorm.
"""
import logging

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.log import LOG
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver

NET = """name: "lenient"
layer { name: "x" type: "DummyData" top: "x"
        dummy_data_param { shape { dim: 4 dim: 3 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "constant" value: 5 }
                              bias_filler { type: "constant" value: 7 } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "bn"
        batch_norm_param { scale_bias: true } }
layer { name: "loss" type: "Reduction" bottom: "bn" top: "loss" loss_weight: 1 }
"""


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        LOG.addHandler(self)
        return self

    def __exit__(self, *exc):
        LOG.removeHandler(self)


def blob(shape, values):
    bp = caffe_pb2.BlobProto()
    bp.shape.dim.extend(shape)
    bp.data.extend(values)
    return bp


def caffemodel(tmp_path, ip_weight=((3, 2), range(6)), ip_bias=((3,), (1, 2, 3)), ip_extra=False):
    param = caffe_pb2.NetParameter(name="lenient")
    ip = param.layer.add(name="ip", type="InnerProduct")
    ip.blobs.add().CopyFrom(blob(*ip_weight))
    ip.blobs.add().CopyFrom(blob(*ip_bias))
    if ip_extra:
        ip.blobs.add().CopyFrom(blob((1,), (9,)))
    bn = param.layer.add(name="bn", type="BatchNorm")
    for shape, values in (((2,), (0.5, -0.5)), ((2,), (4, 9)), ((1,), (3,))):
        bn.blobs.add().CopyFrom(blob(shape, values))
    path = tmp_path / "w.caffemodel"
    path.write_bytes(param.SerializeToString())
    return path


def solver(tmp_path, extra="", weights=None):
    (tmp_path / "net.prototxt").write_text(NET)
    text = (f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 1 '
            f'display: 0 snapshot_after_train: false {extra}')
    if weights is not None:
        text += f' weights: "{weights}"'
    (tmp_path / "solver.prototxt").write_text(text)
    return get_solver(str(tmp_path / "solver.prototxt"))


def test_ignore_shape_mismatch_copies_equal_counts_and_skips_the_rest(tmp_path):
    path = caffemodel(tmp_path)
    with Warnings() as logs:
        s = solver(tmp_path, "ignore_shape_mismatch: true", weights=path)
    ip, bn = s.net.params["ip"], s.net.params["bn"]
    # 3x2 stored, 2x3 wanted: the 6 values in memory order
    np.testing.assert_array_equal(ip[0].data, [[0, 1, 2], [3, 4, 5]])
    # 3 values for 2: skipped, the filler's 7 stays
    np.testing.assert_array_equal(ip[1].data, [7, 7])
    # 3 BVLC blobs into 5: the first 3 copied, scale and bias keep 1 and 0
    np.testing.assert_array_equal(bn[0].data, [0.5, -0.5])
    np.testing.assert_array_equal(bn[1].data, [4, 9])
    np.testing.assert_array_equal(bn[2].data, [3])
    np.testing.assert_array_equal(bn[3].data, [1, 1])
    np.testing.assert_array_equal(bn[4].data, [0, 0])
    text = "\n".join(logs.lines)
    assert "Ignoring shape mismatch and copying forcefully" in text
    assert "Cannot copy param 1 weights from layer 'ip'" in text
    assert "Incompatible number of blobs for layer bn" in text


def test_unset_field_keeps_caffes_strict_load_despite_the_true_default(tmp_path):
    path = caffemodel(tmp_path)
    assert caffe_pb2.SolverParameter().ignore_shape_mismatch  # the schema default
    with pytest.raises(CaffeError, match="Cannot copy param 0 weights from layer 'ip'"):
        solver(tmp_path, weights=path)


def test_explicit_false_is_strict(tmp_path):
    path = caffemodel(tmp_path, ip_weight=((2, 3), range(6)), ip_bias=((2,), (1, 2)))
    with pytest.raises(CaffeError, match="Incompatible number of blobs for layer bn"):
        solver(tmp_path, "ignore_shape_mismatch: false", weights=path)


def test_train_weights_flag_uses_the_solver_field(tmp_path):
    path = caffemodel(tmp_path)
    s = solver(tmp_path, "ignore_shape_mismatch: true")
    s.load_weights(str(path))
    np.testing.assert_array_equal(s.net.params["ip"][0].data, [[0, 1, 2], [3, 4, 5]])


def test_blob_count_mismatch_outside_batch_norm(tmp_path):
    """0.16/0.17 tolerate a count mismatch in BatchNorm only; G1/G2 in any layer."""
    path = caffemodel(tmp_path, ip_extra=True)
    with pytest.raises(CaffeError, match="Incompatible number of blobs for layer ip"):
        solver(tmp_path, "ignore_shape_mismatch: true", weights=path)
    s = solver(tmp_path, "ignore_mismatching_blobs: true", weights=path)
    np.testing.assert_array_equal(s.net.params["ip"][0].data, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(s.net.params["bn"][1].data, [4, 9])
