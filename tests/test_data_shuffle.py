"""Data layer record order with data_param.shuffle (NVCaffe / caffe-jacinto 0.16/0.17: a
permutation per epoch, TRAIN only) and shuffle_skip_max (caffe-jacinto 0.15: a random walk).

The database holds 5 records; record i is a 1x1x1 image of value i with label i, so the
labels of the batches spell out which records were read.
"""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN, set_random_seed
from caffe_lite.data.datum import array_to_datum
from caffe_lite.data.db import DBWriter, LMDBReader
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2

N = 5


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "db"
    with DBWriter(path, "lmdb") as writer:
        for i in range(N):
            image = np.full((1, 1, 1), i, np.uint8)
            writer.put(f"{i:08d}", array_to_datum(image, i).SerializeToString())
    return path


def data_layer(db, extra, phase=TRAIN, seed=1):
    set_random_seed(seed)
    text = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
            f'source: "{db}" batch_size: 2 backend: LMDB {extra} }} }}')
    layer = create_layer(text_format.Parse(text, caffe_pb2.NetParameter()).layer[0], phase)
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


def records(layer, top, batches):
    out = []
    for _ in range(batches):
        layer.forward([], top)
        np.testing.assert_array_equal(top[0].data.reshape(-1), top[1].data)
        out.extend(int(v) for v in top[1].data)
    return out


def test_each_epoch_is_a_new_permutation(db):
    layer, top = data_layer(db, "shuffle: true")
    got = records(layer, top, 10)              # 20 records: 4 epochs, batches straddle them
    epochs = [got[i:i + N] for i in range(0, 20, N)]
    assert all(sorted(e) == list(range(N)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled, not one order repeated
    assert epochs[0] != list(range(N))


def test_order_follows_the_random_seed(db):
    def first_epochs(seed):
        layer, top = data_layer(db, "shuffle: true", seed=seed)
        return records(layer, top, 5)
    assert first_epochs(3) == first_epochs(3)
    assert first_epochs(3) != first_epochs(4)


def test_test_nets_and_unset_shuffle_read_in_order(db):
    for layer, top in (data_layer(db, "shuffle: true", TEST), data_layer(db, "")):
        assert records(layer, top, 3) == [0, 1, 2, 3, 4, 0]


@pytest.mark.parametrize("extra", ["shuffle: true", "shuffle: true shuffle_skip_max: 3"])
def test_resume_continues_the_same_order(db, extra):
    layer, top = data_layer(db, extra)
    straight = records(layer, top, 8)
    again, top2 = data_layer(db, extra)
    records(again, top2, 3)
    state = again.get_state()
    resumed, top3 = data_layer(db, extra, seed=99)  # the state, not the seed, decides
    resumed.set_state(state)
    assert records(resumed, top3, 5) == straight[6:]


def test_walk_by_hand(db):
    """0.15 draws a skip in [0, shuffle_skip_max) after each record: with 1 it stays on the
    first record; with 2 it moves 0 or 1 records, in every phase."""
    layer, top = data_layer(db, "shuffle: true shuffle_skip_max: 1", TEST)
    assert records(layer, top, 3) == [0] * 6
    layer, top = data_layer(db, "shuffle: true shuffle_skip_max: 2")
    got = records(layer, top, 20)
    for a, b in zip(got, got[1:]):
        # one step of 0 or 1; passing the end goes back to the first record
        assert b - a in (0, 1) or (a == N - 1 and b == 0)
    assert got[0] == 0 and set(got) == set(range(N))


def test_skip_max_must_be_positive(db):
    with pytest.raises(CaffeError, match="shuffle_skip_max must be positive, not 0"):
        data_layer(db, "shuffle: true shuffle_skip_max: 0")


def test_reader_values_at_reads_by_position(db):
    reader = LMDBReader(db)
    by_key = [value for _, value in reader.items()]
    assert reader.values_at([3, 0, 3]) == [by_key[3], by_key[0], by_key[3]]
