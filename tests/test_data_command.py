"""`caffe-lite data` as a user meets it: where the files come from, where the output goes
(padded builds get a folder of their own), and what a missing data set says."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from caffe_lite import cli
from caffe_lite.common import TRAIN
from caffe_lite.data import datasets
from caffe_lite.errors import CaffeError
from caffe_lite.io.prototxt import read_net_param, read_solver_param

ROOT = Path(__file__).resolve().parents[1]
VARIANT = ROOT / "models" / "cifar10_quick" / "fashion_mnist"


def _fake_idx_folder(folder, n_train=3, n_test=2):
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                            ("labels-idx1", rng.integers(0, 10, n))):
            array = array.astype(np.uint8)
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim,
                                                                 *array.shape)
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(
                gzip.compress(header + array.tobytes()))
    return folder


def run(capsys, *argv):
    rc = cli.main(list(map(str, argv)))
    return rc, capsys.readouterr().err


def test_fashion_mnist_not_installed_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "absent"))
    rc, err = run(capsys, "data", "fashion-mnist")
    assert rc == 1
    assert err == ("caffe-lite data: error: Fashion-MNIST is not installed: `apt-get install "
                   f"dataset-fashion-mnist` puts its IDX files in {tmp_path / 'absent'}; or "
                   "give -from DIR, a folder of train-images-idx3-ubyte(.gz), "
                   "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), "
                   "t10k-labels-idx1-ubyte(.gz)\n")


def test_missing_from_folder_names_what_it_should_hold(capsys, tmp_path):
    rc, err = run(capsys, "data", "mnist", "-from", tmp_path / "nope")
    assert rc == 1 and err.startswith(f"caffe-lite data: error: {tmp_path / 'nope'}: no such "
                                      "directory (-from names the folder of train-images")


@pytest.mark.parametrize("pad, folder, side", [(0, "data/fashion-mnist", 28),
                                               (2, "data/fashion-mnist-32", 32)])
def test_default_output_folder_names_the_padded_size(capsys, tmp_path, monkeypatch, pad,
                                                     folder, side):
    src = _fake_idx_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    rc, err = run(capsys, "data", "fashion-mnist", "-from", src, "-pad", pad, "-nomd5")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [
        "fashion_mnist_mean.binaryproto", "fashion_mnist_test_lmdb", "fashion_mnist_train_lmdb"]
    from caffe_lite.data.datum import datum_from_bytes, datum_to_array
    from caffe_lite.data.db import open_reader
    first = next(iter(open_reader(f"{folder}/fashion_mnist_train_lmdb").items()))[1]
    assert datum_to_array(datum_from_bytes(first)).shape == (1, side, side)
    assert (f"Padding the 28x28 images to {side}x{side}" in err) == (pad > 0)


def test_cifar10_takes_no_pad(capsys):
    rc, err = run(capsys, "data", "cifar10", "-from", "x.tar.gz", "-pad", "2")
    assert rc == 1
    assert err == "caffe-lite data: error: -pad applies to mnist and fashion-mnist only\n"


def test_fashion_variant_reads_only_the_padded_build():
    """Every path of the 32x32 variant lies in the folder `-pad 2` writes, never in the
    unpadded one, so a 28x28 build cannot be trained on by mistake."""
    padded = datasets.default_out("fashion-mnist", 2)
    net = read_net_param(str(VARIANT / "cifar10_quick_train_test.prototxt"))
    paths = [p for layer in net.layer if layer.type == "Data"
             for p in (layer.data_param.source, layer.transform_param.mean_file)]
    solver = read_solver_param(str(VARIANT / "cifar10_quick_solver.prototxt"))
    paths.append(solver.snapshot_prefix)
    assert len(paths) == 5
    assert all(str(Path(p).parent) == padded for p in paths), paths
    assert padded != datasets.default_out("fashion-mnist")


def test_fashion_variant_refuses_an_unpadded_build(capsys, tmp_path, monkeypatch):
    from caffe_lite.net import Net
    src = _fake_idx_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    model = str(VARIANT / "cifar10_quick_train_test.prototxt")
    assert run(capsys, "data", "fashion-mnist", "-from", src, "-nomd5")[0] == 0
    with pytest.raises(CaffeError, match="data/fashion-mnist-32/"):
        Net(model, phase=TRAIN)
    assert run(capsys, "data", "fashion-mnist", "-from", src, "-nomd5", "-pad", "2")[0] == 0
    net = Net(model, phase=TRAIN)
    assert net.blobs["data"].data.shape[1:] == (1, 32, 32)


@pytest.mark.parametrize("path, command", [
    ("data/mnist/mnist_train_lmdb", "caffe-lite data mnist"),
    ("./data/mnist/mnist_mean.binaryproto", "caffe-lite data mnist"),
    ("data/fashion-mnist-32/fashion_mnist_test_lmdb", "caffe-lite data fashion-mnist -pad 2"),
    ("data/fashion-mnist-32/cifar10_quick", "caffe-lite data fashion-mnist -pad 2"),
    ("data/mnist-36/mnist_train_lmdb", "caffe-lite data mnist -pad 4"),
    ("data/cifar10/mean.binaryproto", "caffe-lite data cifar10 -from cifar-10-binary.tar.gz"),
    ("examples/mnist/mnist_train_lmdb", "caffe-lite data mnist -out examples/mnist"),
    ("/srv/data/mnist/mnist_test_leveldb",
     "caffe-lite data mnist -out /srv/data/mnist -backend leveldb"),
    ("data/mnist-29/mnist_train_lmdb", "caffe-lite data mnist -out data/mnist-29"),
    ("data/imagenet/ilsvrc12_train_lmdb", None),
    ("data/cifar100/cifar10_quick", None),
])
def test_build_command_of_a_missing_path(path, command):
    assert datasets.build_command(path) == command
