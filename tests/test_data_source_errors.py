"""A data layer's missing file says where it was asked for: the prototxt file:line, the layer,
the field and the missing path, in one line (Net adds the first two to any layer setup error).
"""
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.common import TEST
from caffe_lite.errors import CaffeError
from caffe_lite.io.binary import write_binary
from caffe_lite.io.blobs import array_to_blob_proto
from caffe_lite.net import Net

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "data_lmdb"
LMDB = GOLDEN / "train_lmdb"  # 20 images, 3x10x12

# The data layer opens on line 4, as in a train_val.prototxt with a header.
HEADER = 'name: "x"\n# the data\n\n'


def _net_error(tmp_path, layer_text, more=""):
    path = tmp_path / "train_val.prototxt"
    path.write_text(HEADER + layer_text + more)
    with pytest.raises(CaffeError) as err:
        Net(str(path), TEST)
    message = str(err.value)
    assert "\n" not in message
    return message, f"{path}:4: "


def _data(source, transform=""):
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label"\n'
            f'  transform_param {{ {transform} }}\n'
            f'  data_param {{ source: "{source}" batch_size: 4 backend: LMDB }} }}\n')


def test_missing_lmdb_names_prototxt_layer_field_and_path(tmp_path):
    missing = tmp_path / "ilsvrc12_train_lmdb"
    message, where = _net_error(tmp_path, _data(missing))
    assert message == (f"{where}layer 'data' (Data): data_param.source '{missing}': "
                       "no such LMDB database (a directory is expected)")


def test_lmdb_source_that_is_a_file(tmp_path):
    (tmp_path / "db").write_bytes(b"")
    message, where = _net_error(tmp_path, _data(tmp_path / "db"))
    assert message == (f"{where}layer 'data' (Data): data_param.source '{tmp_path / 'db'}': "
                       "not an LMDB database (a directory is expected)")


def test_missing_mean_file_names_prototxt_layer_field_and_path(tmp_path):
    message, where = _net_error(
        tmp_path, _data(LMDB, 'mean_file: "data/ilsvrc12/imagenet_mean.binaryproto"'))
    assert message == (f"{where}layer 'data' (Data): transform_param.mean_file "
                       "'data/ilsvrc12/imagenet_mean.binaryproto': no such file")


def test_mean_file_of_another_size_fails_at_setup(tmp_path):
    # the mean is checked against the first image when the net is built, not at forward
    write_binary(tmp_path / "m", array_to_blob_proto(np.zeros((1, 3, 8, 8), np.float32)))
    message, where = _net_error(tmp_path, _data(LMDB, f'mean_file: "{tmp_path / "m"}"'))
    assert message == (f"{where}layer 'data' (Data): transform_param.mean_file "
                       f"'{tmp_path / 'm'}' has shape (3, 8, 8); the data is (3, 10, 12)")


def test_layer_error_is_not_named_twice(tmp_path):
    text = _data(LMDB).replace("batch_size: 4", "batch_size: 0")
    message, where = _net_error(tmp_path, text)
    assert message == f"{where}layer 'data' (Data): data_param.batch_size must be positive"


def test_crop_larger_than_the_images(tmp_path):
    message, where = _net_error(tmp_path, _data(LMDB, "crop_size: 11"))
    assert message == (f"{where}layer 'data' (Data): transform_param.crop_size 11 is larger "
                       "than the image (10x12)")


def _image_data(source):
    return (f'layer {{ name: "img" type: "ImageData" top: "data" top: "label"\n'
            f'  image_data_param {{ source: "{source}" batch_size: 1 }} }}\n')


def test_missing_image_list(tmp_path):
    missing = tmp_path / "train.txt"
    message, where = _net_error(tmp_path, _image_data(missing))
    assert message == (f"{where}layer 'img' (ImageData): image_data_param.source '{missing}': "
                       "cannot open list file: No such file or directory")


def test_bad_image_list_entry_keeps_the_list_line(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("a.png 1\nb.png x\n")
    message, where = _net_error(tmp_path, _image_data(listing))
    assert message == (f"{where}layer 'img' (ImageData): {listing}:2: expected 'path label', "
                       "got 'b.png x'")


def _hdf5_data(source):
    return (f'layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"\n'
            f'  hdf5_data_param {{ source: "{source}" batch_size: 2 }} }}\n')


def test_missing_hdf5_source_and_listed_file(tmp_path):
    pytest.importorskip("h5py")
    missing = tmp_path / "train_h5.txt"
    message, where = _net_error(tmp_path, _hdf5_data(missing))
    assert message == (f"{where}layer 'h5' (HDF5Data): hdf5_data_param.source '{missing}': "
                       "Failed to open source file: No such file or directory")
    missing.write_text("data/train0.h5\n")
    message, where = _net_error(tmp_path, _hdf5_data(missing))
    assert message == (f"{where}layer 'h5' (HDF5Data): Failed opening HDF5 file: "
                       f"data/train0.h5 (listed in hdf5_data_param.source '{missing}')")


def test_solver_nets_name_their_prototxt_line(tmp_path):
    """A net the solver reads from its `net:` file reports errors at that file's lines,
    as `caffe-lite test -model` does (the train and the test net alike)."""
    from caffe_lite.solvers import get_solver
    missing = tmp_path / "ilsvrc12_train_lmdb"
    net = tmp_path / "train_val.prototxt"
    net.write_text(HEADER + _data(missing))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}" base_lr: 0.01 lr_policy: "fixed" max_iter: 1')
    with pytest.raises(CaffeError) as err:
        get_solver(str(solver))
    assert str(err.value) == (f"{net}:4: layer 'data' (Data): data_param.source '{missing}': "
                              "no such LMDB database (a directory is expected)")


def test_missing_data_set_names_the_command_that_builds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message, where = _net_error(
        tmp_path, _data("data/mnist/mnist_train_lmdb",
                        'mean_file: "data/fashion-mnist-32/mean.binaryproto"'))
    assert message.endswith("transform_param.mean_file 'data/fashion-mnist-32/mean.binaryproto'"
                            ": no such file (build it with: caffe-lite data fashion-mnist "
                            "-pad 2)")
    message, where = _net_error(tmp_path, _data("data/mnist/mnist_train_lmdb"))
    assert message.endswith("no such LMDB database (a directory is expected) (build it with: "
                            "caffe-lite data mnist)")
