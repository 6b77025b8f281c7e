"""HDF5Data: rows across files in order, wrap, shuffle, exact resume, clear errors."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_lite.blob import Blob
from caffe_lite.common import set_random_seed
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2

h5py = pytest.importorskip("h5py")


def _files(tmp_path, sizes=(3, 5)):
    """Files of `sizes` rows: data (n, 2, 3) and label (n,) numbered across the files."""
    start = 0
    names = []
    for i, n in enumerate(sizes):
        rows = np.arange(start, start + n)
        path = tmp_path / f"f{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = (rows[:, None, None] + np.zeros((1, 2, 3))).astype(np.float64)
            f["label"] = rows.astype(np.int32)
        names.append(str(path))
        start += n
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    return start


def _layer(tmp_path, params, tops=("data", "label"), extra=""):
    net = caffe_pb2.NetParameter()
    top_text = " ".join(f'top: "{t}"' for t in tops)
    text_format.Parse(f"""layer {{ name: "h" type: "HDF5Data" {top_text} {extra}
        hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" {params} }} }}""", net)
    layer = create_layer(net.layer[0])
    top = [Blob() for _ in tops]
    layer.setup([], top)
    return layer, top


def _labels(layer, top, batches):
    out = []
    for _ in range(batches):
        layer.forward([], top)
        np.testing.assert_array_equal(top[0].data, top[1].data[:, None, None]
                                      + np.zeros((1, 2, 3)))
        out.extend(top[1].data.tolist())
    return out


def test_rows_in_order_across_files_and_wrap(tmp_path):
    total = _files(tmp_path)
    layer, top = _layer(tmp_path, "batch_size: 3")
    assert top[0].shape == (3, 2, 3) and top[1].shape == (3,)
    assert top[0].data.dtype == np.float32
    assert _labels(layer, top, 4) == [i % total for i in range(12)]


def test_shuffle_covers_every_row_and_resumes_exactly(tmp_path):
    total = _files(tmp_path, (4, 3, 5))
    set_random_seed(2)
    layer, top = _layer(tmp_path, "batch_size: 4 shuffle: true")
    labels = _labels(layer, top, 9)       # three passes of 12 rows
    for e in range(3):
        assert sorted(labels[12 * e:12 * (e + 1)]) == list(range(total))
    assert labels[:12] != list(range(12)) or labels[12:24] != list(range(12))
    set_random_seed(2)
    first, top1 = _layer(tmp_path, "batch_size: 4 shuffle: true")
    _labels(first, top1, 4)
    fresh, top2 = _layer(tmp_path, "batch_size: 4 shuffle: true")
    fresh.set_state(first.get_state())
    assert _labels(fresh, top2, 5) == labels[16:]


def test_errors(tmp_path):
    _files(tmp_path)
    with pytest.raises(CaffeError, match="Failed to find HDF5 dataset other"):
        _layer(tmp_path, "batch_size: 2", tops=("data", "other"))
    with pytest.raises(CaffeError, match="does not transform"):
        _layer(tmp_path, "batch_size: 2", extra="transform_param { scale: 2 }")
    (tmp_path / "list.txt").write_text(str(tmp_path / "missing.h5"))
    with pytest.raises(CaffeError, match="Failed opening HDF5 file"):
        _layer(tmp_path, "batch_size: 2")
    (tmp_path / "list.txt").write_text("\n")
    with pytest.raises(CaffeError, match="at least 1 HDF5 filename"):
        _layer(tmp_path, "batch_size: 2")


def test_missing_h5py_is_one_clear_error(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(CaffeError, match=r"hdf5 extra: pip install 'caffe-lite\[hdf5\]'"):
        _layer(tmp_path, "batch_size: 2")
