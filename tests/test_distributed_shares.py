"""Data shares (layers/base_data.py, hdf5_data.py: set_share): reader r of n reads batches
r, r + n, ... of the one-reader stream, records and random transforms alike, and the state
it saves resumes at any reader count. No MPI needed."""
import numpy as np
import pytest
from distributed_setup import make_db
from google.protobuf import text_format
from PIL import Image

from caffe_lite.blob import Blob
from caffe_lite.common import TRAIN
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2

ORDERS = {
    "in order": "",
    "shuffle": "shuffle: true",
    "walk (jacinto 0.15)": "shuffle: true shuffle_skip_max: 5",
}


def _layer(text, share=None, state=None):
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    layer = create_layer(net.layer[0], TRAIN)
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.set_state(dict(state or {}, seed=1234) if state else
                    dict(layer.get_state(), seed=1234))
    if share is not None:
        layer.set_share(*share)
    return layer, top


def _batches(layer, top, count):
    out = []
    for _ in range(count):
        layer.forward([], top)
        out.append((top[0].data.copy(), top[1].data.copy()))
    return out


def _data_net(db, order):
    # 64 records, batch 5: batches straddle the epochs' ends
    return (f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
            f'transform_param {{ crop_size: 4 mirror: true scale: 0.5 }} '
            f'data_param {{ source: "{db}" batch_size: 5 backend: LMDB {order} }} }}')


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_db(tmp_path_factory.mktemp("shares") / "db")


def _assert_same(got, want):
    for (data, label), (want_data, want_label) in zip(got, want):
        np.testing.assert_array_equal(label, want_label)
        np.testing.assert_array_equal(data, want_data)


@pytest.mark.parametrize("order", list(ORDERS))
def test_readers_take_the_batches_of_one_stream_in_turn(db, order):
    text = _data_net(db, ORDERS[order])
    stream = _batches(*_layer(text), 30)
    for count in (2, 3):
        for rank in range(count):
            got = _batches(*_layer(text, (rank, count)), 30 // count)
            _assert_same(got, stream[rank::count])


@pytest.mark.parametrize("order", list(ORDERS))
def test_a_share_state_resumes_at_another_reader_count(db, order):
    text = _data_net(db, ORDERS[order])
    stream = _batches(*_layer(text), 24)
    # two readers read 4 rounds (8 batches); reader 0's state goes on with 3 readers, then 1
    first, top = _layer(text, (0, 2))
    _batches(first, top, 4)
    state = first.get_state()
    assert state["batch_index"] == 8
    for rank in range(3):
        _assert_same(_batches(*_layer(text, (rank, 3), state), 2), stream[8 + rank:14:3])
    _assert_same(_batches(*_layer(text, None, state), 4), stream[8:12])


def test_image_data_shares_the_shuffled_list(tmp_path):
    rng = np.random.default_rng(3)
    lines = []
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
        lines.append(f"{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    text = (f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ mirror: true crop_size: 4 }} image_data_param {{ '
            f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 3 '
            f'shuffle: true }} }}')
    stream = _batches(*_layer(text), 8)
    for rank in range(2):
        _assert_same(_batches(*_layer(text, (rank, 2)), 4), stream[rank::2])


def test_hdf5_data_shares_rows_across_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    names = []
    for i, rows in enumerate((5, 3, 7)):
        path = tmp_path / f"{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + 100 * i
            f["label"] = np.arange(rows, dtype=np.float32) + 100 * i
        names.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(names))
    text = (f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 4 '
            f'shuffle: true }} }}')
    stream = _batches(*_layer(text), 12)
    for rank in range(3):
        reader, top = _layer(text, (rank, 3))
        _assert_same(_batches(reader, top, 4), stream[rank::3])
        assert reader.get_state()["offset"] == 4 * 12      # the round's, on every reader
