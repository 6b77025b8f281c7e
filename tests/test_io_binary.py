"""Binary files written by real Caffe (golden caffemodels, solverstates, a mean file), our
writers, unknown fields from fork vintages, HDF5 snapshots, atomic writes."""
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.io import binary, blobs, hdf5
from caffe_lite.io.atomic import atomic_path, atomic_write
from caffe_lite.log import LOG
from caffe_lite.proto import caffe_pb2

LOCAL = Path(__file__).resolve().parent / "data" / "golden"
SHARED_GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


def golden_dirs(prefix):
    """Case folders: the local copies, plus every case in ../shared/golden when present."""
    found = {p.name: p for p in sorted(LOCAL.glob(prefix + "*")) if p.is_dir()}
    if SHARED_GOLDEN.is_dir():
        for p in sorted(SHARED_GOLDEN.glob(prefix + "*")):
            if p.is_dir():
                found[p.name] = p
    return [found[k] for k in sorted(found)]


NET_CASES = [p for p in golden_dirs("") if (p / "weights_init.caffemodel").exists()
             and not p.name.startswith("solver")]
SOLVER_CASES = golden_dirs("solver_")


def test_local_golden_copies_exist():
    for name in ("layers_a", "layers_b", "solver_sgd_step", "solver_adam_sigmoid"):
        assert (LOCAL / name / "golden.npz").exists()


@pytest.mark.parametrize("case", NET_CASES, ids=[p.name for p in NET_CASES])
def test_golden_weights_init(case):
    golden = np.load(case / "golden.npz")
    param = binary.read_net_binary(case / "weights_init.caffemodel")
    weights = dict(binary.read_net_weights(case / "weights_init.caffemodel"))
    checked = 0
    for layer in param.layer:
        if layer.type == "BatchNorm":
            continue  # its statistics moved after weights_init was written
        for i, bp in enumerate(layer.blobs):
            want = golden[f"train/param/{layer.name}/{i}"]
            got = blobs.blob_proto_to_array(bp)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(weights[layer.name][i], want)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("case", SOLVER_CASES, ids=[p.name for p in SOLVER_CASES])
def test_golden_solver_snapshot(case):
    golden = np.load(case / "golden.npz")
    param = binary.read_net_binary(case / "snap_iter_6.caffemodel")
    shapes = []
    for layer in param.layer:
        for i, bp in enumerate(layer.blobs):
            got = blobs.blob_proto_to_array(bp)
            np.testing.assert_array_equal(got, golden[f"step5/param/{layer.name}/{i}"])
            shapes.append(got.shape)
    state = binary.read_solver_state(case / "snap_iter_6.solverstate")
    assert state.iter == 6
    assert state.learned_net.endswith("snap_iter_6.caffemodel")
    per_param = 2 if any(k in case.name for k in ("adam", "adadelta")) else 1
    assert len(state.history) == per_param * len(shapes)
    for i, bp in enumerate(state.history):
        hist = blobs.blob_proto_to_array(bp)
        assert hist.shape == shapes[i % len(shapes)]
        assert np.isfinite(hist).all()


@pytest.mark.parametrize("case", NET_CASES + SOLVER_CASES,
                         ids=[p.name for p in NET_CASES + SOLVER_CASES])
def test_caffe_files_reserialize_byte_for_byte(case, tmp_path):
    for src in sorted(case.glob("*.caffemodel")) + sorted(case.glob("*.solverstate")):
        data = src.read_bytes()
        msg = caffe_pb2.SolverState() if src.suffix == ".solverstate" else \
            caffe_pb2.NetParameter()
        binary.parse_binary(data, msg, src)
        out = tmp_path / src.name
        binary.write_binary(out, msg)
        assert out.read_bytes() == data
        protos = list(msg.history) if src.suffix == ".solverstate" else \
            [bp for layer in msg.layer for bp in layer.blobs]
        assert protos
        for bp in protos:
            again = blobs.array_to_blob_proto(blobs.blob_proto_to_array(bp))
            assert again.SerializeToString() == bp.SerializeToString()


def test_mean_binaryproto_legacy_shape():
    bp = binary.read_blob_proto(LOCAL / "data_lmdb" / "mean.binaryproto")
    mean = blobs.blob_proto_to_array(bp)
    assert mean.shape == (1, 3, 10, 12) and mean.dtype == np.float32
    assert 0 < mean.min() and mean.max() < 255


# --- BlobProto <-> array --------------------------------------------------------------------

def test_blob_round_trip_with_diff():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((2, 3, 4)).astype(np.float32)
    diff = rng.standard_normal((2, 3, 4)).astype(np.float32)
    bp = caffe_pb2.BlobProto.FromString(
        blobs.array_to_blob_proto(data, diff).SerializeToString())
    assert list(bp.shape.dim) == [2, 3, 4] and len(bp.double_data) == 0
    np.testing.assert_array_equal(blobs.blob_proto_to_array(bp), data)
    np.testing.assert_array_equal(blobs.blob_proto_to_array(bp, "diff"), diff)


def test_blob_double():
    data = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    bp = blobs.array_to_blob_proto(data, double=True)
    assert len(bp.data) == 0 and len(bp.double_data) == 6
    got = blobs.blob_proto_to_array(bp)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, data)
    assert blobs.blob_proto_to_array(bp, dtype=np.float32).dtype == np.float32


def test_blob_no_diff_is_none():
    assert blobs.blob_proto_to_array(blobs.array_to_blob_proto(np.ones(3)), "diff") is None


def test_blob_legacy_dims_win_over_shape():
    bp = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4])
    bp.shape.dim.extend([99])
    assert blobs.blob_proto_to_array(bp).shape == (1, 2, 1, 2)
    partial = caffe_pb2.BlobProto(channels=3, data=[])
    assert blobs.blob_proto_to_array(partial).shape == (0, 3, 0, 0)


def test_blob_zero_axes():
    bp = blobs.array_to_blob_proto(np.float32(2.5))
    assert not bp.HasField("shape")
    assert blobs.blob_proto_to_array(bp).shape == ()


def test_blob_count_mismatch():
    bp = caffe_pb2.BlobProto(data=[1, 2, 3])
    bp.shape.dim.extend([2, 2])
    with pytest.raises(CaffeError, match=r"conv1: 3 data values for shape \[2, 2\]"):
        blobs.blob_proto_to_array(bp, name="conv1")


@pytest.mark.parametrize("double", [False, True])
def test_blob_packed_writer_matches_protobuf(double):
    """The packed bytes built with NumPy are the bytes protobuf writes value by value, for a
    blob long enough to need a four-byte length (over 2**21 bytes) and with a diff."""
    rng = np.random.default_rng(5)
    dtype = np.float64 if double else np.float32
    data = rng.standard_normal((3, 200_000)).astype(dtype)
    diff = rng.standard_normal((3, 200_000)).astype(dtype)
    fields = ("double_data", "double_diff") if double else ("data", "diff")
    want = caffe_pb2.BlobProto()
    want.shape.dim.extend(data.shape)
    getattr(want, fields[0]).extend(data.ravel().tolist())
    getattr(want, fields[1]).extend(diff.ravel().tolist())
    got = blobs.array_to_blob_proto(data, diff, double=double)
    assert got.SerializeToString() == want.SerializeToString()
    np.testing.assert_array_equal(blobs.blob_proto_to_array(got), data)
    np.testing.assert_array_equal(blobs.blob_proto_to_array(got, "diff"), diff)


# --- bad binary files -------------------------------------------------------------------------

def _golden_model():
    return LOCAL / "layers_b" / "weights_init.caffemodel"


def test_truncated_caffemodel(tmp_path):
    data = _golden_model().read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CaffeError) as err:
        binary.read_net_binary(path)
    assert str(err.value) == \
        f"{path}: not a valid binary NetParameter (truncated or corrupt)"


def test_garbage_caffemodel(tmp_path):
    path = tmp_path / "junk.caffemodel"
    for seed in range(5):
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 3000, np.uint8)
                         .tobytes())
        with pytest.raises(CaffeError, match="not a valid binary NetParameter"):
            binary.read_net_binary(path)


def test_text_given_as_caffemodel(tmp_path):
    path = tmp_path / "net.caffemodel"
    path.write_text('name: "x"\nlayer { name: "a" }\n')
    with pytest.raises(CaffeError, match="looks like a text prototxt"):
        binary.read_net_binary(path)


def test_empty_and_missing(tmp_path):
    (tmp_path / "e.caffemodel").write_bytes(b"")
    with pytest.raises(CaffeError, match="e.caffemodel: file is empty"):
        binary.read_net_binary(tmp_path / "e.caffemodel")
    with pytest.raises(CaffeError, match="no such file"):
        binary.read_solver_state(tmp_path / "none.solverstate")
    with pytest.raises(CaffeError, match="is a directory"):
        binary.read_blob_proto(tmp_path)


def _layer_with_unknown(number, payload=b"\x01"):
    """A NetParameter holding one layer that carries varint field `number`."""
    layer = caffe_pb2.LayerParameter(name="conv1", type="Convolution").SerializeToString()
    layer += blobs.encode_varint(number << 3) + payload
    return blobs.encode_varint((100 << 3) | 2) + blobs.encode_varint(len(layer)) + layer


def _foreign_layer_number():
    from caffe_lite.proto import vintages
    ours = {f.number for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    foreign = [number for message, number in sorted(vintages.FOREIGN_NUMBERS)
               if message == "LayerParameter" and number not in ours]
    assert foreign, "the vintages table lists no LayerParameter number outside our schema"
    return foreign[0]


def test_fork_vintage_field_is_an_error(tmp_path):
    number = _foreign_layer_number()
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(_layer_with_unknown(number))
    with pytest.raises(CaffeError) as err:
        binary.read_net_binary(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and f"field {number}" in msg
    assert "LayerParameter" in msg and "vintage" in msg


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_unknown_field_is_a_warning(tmp_path):
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(_layer_with_unknown(98765))
    handler = _Records()
    LOG.addHandler(handler)
    try:
        param = binary.read_net_binary(path)
    finally:
        LOG.removeHandler(handler)
    assert param.layer[0].name == "conv1"
    assert any("98765" in m and "LayerParameter" in m for m in handler.messages)


def test_v1_caffemodel_is_upgraded(tmp_path):
    old = caffe_pb2.NetParameter(name="old")
    v1 = old.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.add().CopyFrom(blobs.array_to_blob_proto(np.ones((2, 3), np.float32)))
    old.input.append("data")
    path = tmp_path / "v1.caffemodel"
    binary.write_binary(path, old)
    param = binary.read_net_binary(path)
    assert [(lp.name, lp.type) for lp in param.layer] == [("ip", "InnerProduct")]
    assert len(param.input) == 0
    np.testing.assert_array_equal(blobs.blob_proto_to_array(param.layer[0].blobs[0]),
                                  np.ones((2, 3)))
    raw = binary.read_net_binary(path, upgrade=False)
    assert len(raw.layers) == 1 and len(raw.layer) == 0


# --- HDF5 ----------------------------------------------------------------------------------

@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


def test_hdf5_caffemodel_round_trip(tmp_path, h5py):
    rng = np.random.default_rng(2)
    layers = [("data", []), ("conv1", [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                       rng.standard_normal(4).astype(np.float32)]),
              ("shared", [None, np.ones(4, np.float32)])]
    diffs = [("conv1", [np.zeros((4, 3, 3, 3)), np.ones(4)])]
    path = tmp_path / "net_iter_1.caffemodel.h5"
    hdf5.write_net_hdf5(path, layers, diffs)
    with h5py.File(path, "r") as f:
        assert set(f) == {"data", "diff"}
        assert set(f["data"]) == {"data", "conv1", "shared"}
        assert f["data/conv1/0"].dtype == np.float32 and f["data/conv1/0"].shape == (4, 3, 3, 3)
        assert "0" not in f["data/shared"]
        assert f["diff/conv1/1"][()].tolist() == [1, 1, 1, 1]
    got = dict(hdf5.read_net_hdf5(path))
    assert got["data"] == []
    for a, b in zip(got["conv1"], layers[1][1]):
        np.testing.assert_array_equal(a, b)
    assert got["shared"][0] is None
    param = binary.read_any_net(path)
    conv = [lp for lp in param.layer if lp.name == "conv1"][0]
    np.testing.assert_array_equal(blobs.blob_proto_to_array(conv.blobs[0]), layers[1][1][0])
    assert dict(binary.read_net_weights(path)).keys() == got.keys()


def test_hdf5_solver_state_round_trip(tmp_path, h5py):
    history = [np.full((2, 3), 0.5, np.float32), np.arange(3, dtype=np.float32)]
    path = tmp_path / "snap_iter_6.solverstate.h5"
    hdf5.write_solver_state_hdf5(path, 6, "snap_iter_6.caffemodel.h5", 2, history)
    with h5py.File(path, "r") as f:
        assert f["iter"].shape == () and f["iter"].dtype == np.int32
        tid = f["learned_net"].id.get_type()
        assert tid.get_strpad() == h5py.h5t.STR_NULLTERM
        assert tid.get_size() == len("snap_iter_6.caffemodel.h5") + 1
    state = binary.read_solver_state(path)
    assert (state.iter, state.current_step) == (6, 2)
    assert state.learned_net == "snap_iter_6.caffemodel.h5"
    assert [tuple(h.shape.dim) for h in state.history] == [(2, 3), (3,)]
    np.testing.assert_array_equal(blobs.blob_proto_to_array(state.history[1]), history[1])


def test_hdf5_bad_files(tmp_path, h5py):
    bad = tmp_path / "x.caffemodel.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(CaffeError, match="not a valid HDF5 file"):
        binary.read_any_net(bad)
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(CaffeError, match="no '/data' group"):
        hdf5.read_net_hdf5(tmp_path / "empty.h5")
    with pytest.raises(CaffeError, match="no '/iter'"):
        hdf5.read_solver_state_hdf5(tmp_path / "empty.h5")


def test_hdf5_missing_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(CaffeError, match=r"pip install caffe-lite\[hdf5\]"):
        hdf5.write_net_hdf5(tmp_path / "a.caffemodel.h5", [])


# --- atomic writes -------------------------------------------------------------------------

def test_atomic_write_replaces_and_leaves_nothing(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert (path.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_into_missing_folder(tmp_path):
    with pytest.raises(CaffeError, match="cannot write"):
        atomic_write(tmp_path / "no" / "f.bin", b"x")


@pytest.mark.parametrize("kind", ["solverstate", "caffemodel"])
def test_a_string_field_that_is_not_utf8_is_refused_naming_the_field(tmp_path, kind):
    """proto2 parses such a string as bytes, which then failed where it was used (a fuzz
    case: a damaged learned_net became `internal error: TypeError: Can't mix strings and
    bytes in path components`)."""
    from caffe_lite.io import binary
    from caffe_lite.proto import caffe_pb2
    if kind == "solverstate":
        # field 2, learned_net, length 3
        data = caffe_pb2.SolverState(iter=2).SerializeToString() + b"\x12\x03a\xffb"
        read, field = binary.read_solver_state, "SolverState.learned_net"
    else:
        layer = caffe_pb2.LayerParameter(type="ReLU").SerializeToString() + b"\x0a\x02\xc3("
        data = b"\xa2\x06" + bytes([len(layer)]) + layer           # field 100, layer
        read, field = binary.read_net_binary, "LayerParameter.name"
    path = tmp_path / f"damaged.{kind}"
    path.write_bytes(data)
    with pytest.raises(CaffeError, match=rf"^{path}: field '{field}' is not UTF-8 text"):
        read(str(path))
