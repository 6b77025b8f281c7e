"""Data layer parity with BVLC Caffe (golden/data_lmdb), wrap-around, exact resume."""
import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN, set_random_seed
from caffe_lite.data.datum import array_to_datum
from caffe_lite.data.db import DBWriter
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "data_lmdb"


def _data_layer(text, phase=TEST):
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    layer = create_layer(net.layer[0], phase)
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


@pytest.mark.parametrize("variant", ["meanfile", "meanvalue"])
def test_golden_batches_both_variants_share_one_lmdb(variant, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    golden = np.load("golden.npz")
    other = "meanvalue" if variant == "meanfile" else "meanfile"
    # a second net reading the same LMDB in this process, as a train and a test net do
    layer_b, top_b = _data_layer(open(f"net_{other}.prototxt").read())
    layer, top = _data_layer(open(f"net_{variant}.prototxt").read())
    for k in range(3):  # the third batch wraps around the 20 records
        layer.forward([], top)
        layer_b.forward([], top_b)
        np.testing.assert_array_equal(top[0].data, golden[f"{variant}/iter{k}/data"])
        np.testing.assert_array_equal(top[1].data, golden[f"{variant}/iter{k}/label"])
        np.testing.assert_array_equal(top_b[0].data, golden[f"{other}/iter{k}/data"])


def _make_db(path, n=10, shape=(2, 5, 6)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    with DBWriter(path, "lmdb") as db:
        for i in range(n):
            db.put(f"{i:08d}", array_to_datum(images[i], i).SerializeToString())
    return images


TRAIN_NET = """layer {{ name: "d" type: "Data" top: "data" top: "label"
  transform_param {{ crop_size: 4 mirror: true scale: 0.5 }}
  data_param {{ source: "{src}" batch_size: 4 backend: LMDB }} }}"""


def test_raw_pixels_round_trip_and_wrap(tmp_path):
    images = _make_db(tmp_path / "db")
    layer, top = _data_layer(TRAIN_NET.replace("crop_size: 4 mirror: true scale: 0.5", "")
                             .format(src=tmp_path / "db"), TEST)
    seen = []
    for _ in range(3):
        layer.forward([], top)
        seen.append(top[0].data.copy())
        labels = top[1].data.copy()
    got = np.concatenate(seen)
    want = images[np.arange(12) % 10].astype(np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(labels, [8, 9, 0, 1])


def test_train_crops_and_mirrors_are_reproducible_and_resume_exactly(tmp_path):
    images = _make_db(tmp_path / "db")
    text = TRAIN_NET.format(src=tmp_path / "db")
    set_random_seed(7)
    layer, top = _data_layer(text, TRAIN)
    straight = []
    for _ in range(5):
        layer.forward([], top)
        straight.append(top[0].data.copy())
    # every output is a scaled crop of its source image, possibly mirrored
    for k, batch in enumerate(straight):
        for i, out in enumerate(batch):
            src = images[(k * 4 + i) % 10].astype(np.float32) * 0.5
            crops = [src[:, h:h + 4, w:w + 4] for h in range(2) for w in range(3)]
            assert any(np.array_equal(out, c) or np.array_equal(out, c[:, :, ::-1])
                       for c in crops)
    set_random_seed(7)
    resumed, top2 = _data_layer(text, TRAIN)
    for _ in range(2):
        resumed.forward([], top2)
    state = resumed.get_state()
    fresh, top3 = _data_layer(text, TRAIN)
    fresh.set_state(state)
    for k in range(2, 5):
        fresh.forward([], top3)
        np.testing.assert_array_equal(top3[0].data, straight[k])


def test_existing_output_db_is_refused(tmp_path):
    _make_db(tmp_path / "db")
    before = sorted(os.listdir(tmp_path / "db"))
    from caffe_lite.errors import CaffeError
    with pytest.raises(CaffeError, match="already exists"):
        _make_db(tmp_path / "db")
    assert sorted(os.listdir(tmp_path / "db")) == before


def test_lmdb_reader_in_a_forked_child_reopens_and_continues(tmp_path):
    """LMDB forbids using an environment across fork: the child opens its own and reads on
    from the record where the parent stopped."""
    from caffe_lite.data.db import LMDBReader
    path = tmp_path / "db"
    _make_db(path, n=5)
    reader = LMDBReader(path)
    records = [value for _, value in reader.items()]
    parent_env = reader.env
    assert [reader.next_value() for _ in range(3)] == records[:3]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # child: report and leave at once
        try:
            ok = reader.next_value() == records[3] and reader.env is not parent_env
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and status == 0
    assert reader.next_value() == records[3] and reader.env is parent_env
