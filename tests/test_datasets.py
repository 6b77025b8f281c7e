"""`caffe-lite data`: MNIST-format builders, MD5 and corrupt-input checks."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from caffe_lite.cli import main
from caffe_lite.data import datasets
from caffe_lite.data.datum import datum_from_bytes, datum_to_array
from caffe_lite.data.db import open_reader
from caffe_lite.data.idx import read_idx
from caffe_lite.errors import CaffeError

ROOT = Path(__file__).resolve().parents[1]


def _idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_mnist(folder, n_train=6, n_test=4, compress=True):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        sets[prefix] = (images, labels)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = _idx(arr)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return sets


def test_bundled_mnist_files_pass_their_md5():
    folder = ROOT / "data" / "mnist"
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz",
                      datasets.MNIST_FILES["t10k-labels-idx1-ubyte"])
    assert labels.shape == (10000,) and labels.max() == 9


def test_build_writes_padded_images_labels_and_mean(tmp_path):
    sets = _fake_mnist(tmp_path / "src")
    train_db, test_db, mean_file = datasets.build_idx_dataset(
        "fake", tmp_path / "src", tmp_path / "out", {}, pad=2, check_md5=False)
    values = [v for _, v in open_reader(str(train_db)).items()]
    assert len(values) == 6
    first = datum_from_bytes(values[0])
    img = datum_to_array(first)
    assert img.shape == (1, 32, 32)
    np.testing.assert_array_equal(img[0, 2:30, 2:30], sets["train"][0][0])
    assert img[0, :2].sum() == 0 and first.label == sets["train"][1][0]
    from caffe_lite.io.binary import read_blob_proto
    from caffe_lite.io.blobs import blob_proto_to_array
    mean = blob_proto_to_array(read_blob_proto(str(mean_file))).reshape(1, 32, 32)
    want = np.pad(sets["train"][0].astype(np.float64).mean(0), 2)
    np.testing.assert_allclose(mean[0], want, rtol=1e-6)


def test_wrong_md5_and_truncated_files_are_clear_errors(tmp_path):
    _fake_mnist(tmp_path / "src", compress=False)
    with pytest.raises(CaffeError, match="MD5"):
        datasets.build_idx_dataset("fake", tmp_path / "src", tmp_path / "out",
                                   datasets.MNIST_FILES)
    raw = (tmp_path / "src" / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "src" / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(CaffeError, match="truncated"):
        datasets.build_idx_dataset("fake", tmp_path / "src", tmp_path / "out", {},
                                   check_md5=False)
    assert not (tmp_path / "out" / "fake_train_lmdb").exists()


def test_cli_refuses_existing_output_and_overwrites_nothing(tmp_path, capsys):
    _fake_mnist(tmp_path / "src")
    (tmp_path / "out" / "mnist_train_lmdb").mkdir(parents=True)
    (tmp_path / "out" / "mnist_train_lmdb" / "keep").write_text("x")
    code = main(["data", "mnist", "-from", str(tmp_path / "src"), "-out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "error" in err[0]
    assert (tmp_path / "out" / "mnist_train_lmdb" / "keep").read_text() == "x"


def _fake_cifar(path, kind, n=3, truncate=False):
    import io
    import pickle
    import tarfile
    rng = np.random.default_rng(2)
    truth = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            images = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
            labels = rng.integers(0, 10, n)
            truth[name] = (images.reshape(n, 3, 32, 32), labels)
            if kind == "binary":
                raw = np.concatenate([labels[:, None].astype(np.uint8), images], 1).tobytes()
                member = f"cifar-10-batches-bin/{name}.bin"
            else:
                raw = pickle.dumps({b"data": images, b"labels": labels.tolist()})
                member = f"cifar-10-batches-py/{name}"
            if truncate:
                raw = raw[:-7]
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return truth


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_cifar10_archive_to_lmdb(tmp_path, kind):
    truth = _fake_cifar(tmp_path / "c.tar.gz", kind)
    train_db, test_db, _ = datasets.build_cifar10(tmp_path / "c.tar.gz", tmp_path / "out",
                                                  check_md5=False)
    train = [datum_from_bytes(v) for _, v in open_reader(str(train_db)).items()]
    assert len(train) == 15
    np.testing.assert_array_equal(datum_to_array(train[3]), truth["data_batch_2"][0][0])
    assert train[3].label == truth["data_batch_2"][1][0]
    test = [datum_from_bytes(v) for _, v in open_reader(str(test_db)).items()]
    np.testing.assert_array_equal(datum_to_array(test[2]), truth["test_batch"][0][2])


def test_cifar10_bad_archives(tmp_path):
    _fake_cifar(tmp_path / "c.tar.gz", "binary")
    with pytest.raises(CaffeError, match="MD5"):
        datasets.build_cifar10(tmp_path / "c.tar.gz", tmp_path / "out")
    _fake_cifar(tmp_path / "t.tar.gz", "binary", truncate=True)
    with pytest.raises(CaffeError, match="truncated"):
        datasets.build_cifar10(tmp_path / "t.tar.gz", tmp_path / "out", check_md5=False)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(CaffeError, match="archive"):
        datasets.build_cifar10(tmp_path / "junk.tar.gz", tmp_path / "out", check_md5=False)
    assert not (tmp_path / "out" / "cifar10_train_lmdb").exists()
