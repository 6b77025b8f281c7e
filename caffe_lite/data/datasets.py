"""Builders of train / test databases and mean files, like Caffe's create_mnist.sh."""
import os
import re
from pathlib import Path

import numpy as np

from ..errors import CaffeError
from ..log import LOG
from .datum import array_to_datum
from .db import DBWriter
from .idx import read_idx
from .mean import compute_mean, mean_blob_proto

# Accepted MD5 sums per file: the decompressed IDX content (what mirrors keep identical) and
# the originally published .gz files.
MNIST_FILES = {
    "train-images-idx3-ubyte": {"6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"},
    "train-labels-idx1-ubyte": {"a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"},
    "t10k-images-idx3-ubyte": {"2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"},
    "t10k-labels-idx1-ubyte": {"27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"},
}
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": {"f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
    "train-labels-idx1-ubyte": {"9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"},
    "t10k-images-idx3-ubyte": {"8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"},
    "t10k-labels-idx1-ubyte": {"15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"},
}
# where Debian's dataset-fashion-mnist package installs the four IDX files (.gz)
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
IDX_SIDE = 28   # MNIST and Fashion-MNIST images are 28x28
IDX_DATASETS = ("mnist", "fashion-mnist")


def default_out(name, pad=0):
    """Where `caffe-lite data NAME [-pad N]` writes: data/NAME, or data/NAME-S for padded SxS
    images, so that a model written for the padded images never reads an unpadded build."""
    return f"data/{name}-{IDX_SIDE + 2 * pad}" if pad else f"data/{name}"


def _dataset_of_file(file_name):
    """The data set whose build writes a file of this name (an LMDB, the mean), or None."""
    for name in IDX_DATASETS + ("cifar10",):
        stem = name.replace("-", "_")
        outputs = [f"{stem}_{split}_{backend}" for split in ("train", "test")
                   for backend in ("lmdb", "leveldb")]
        if name in IDX_DATASETS:
            outputs.append(f"{stem}_mean.binaryproto")   # cifar10's is mean.binaryproto
        if file_name in outputs:
            return name
    return None


def _dataset_of_folder(folder_name):
    """(name, pad) of a folder named as `caffe-lite data` names its output, or None."""
    if folder_name in IDX_DATASETS + ("cifar10",):
        return folder_name, 0
    match = re.fullmatch(r"(%s)-(\d+)" % "|".join(IDX_DATASETS), folder_name)
    if match and int(match[2]) > IDX_SIDE and (int(match[2]) - IDX_SIDE) % 2 == 0:
        return match[1], (int(match[2]) - IDX_SIDE) // 2
    return None


def build_command(path):
    """The `caffe-lite data ...` command that creates `path`, or None: for a user whose model
    names a missing database, mean file or snapshot folder. `path` is an output of a data set
    (known by its file name) or anything in a folder named as the command names its output
    (data/mnist, data/fashion-mnist-32, data/cifar10, ...). Relative paths are taken from
    where the model is run, as the command's own default output is."""
    path = Path(path)
    name, pad = (_dataset_of_folder(path.parent.name)
                 or (_dataset_of_file(path.name), 0))
    if name is None:
        return None
    words = ["caffe-lite", "data", name]
    if name == "cifar10":
        words += ["-from", "cifar-10-binary.tar.gz"]
    if pad:
        words += ["-pad", str(pad)]
    if path.parent.as_posix() != default_out(name, pad):
        words += ["-out", path.parent.as_posix()]
    if path.name.endswith("_leveldb"):
        words += ["-backend", "leveldb"]
    return " ".join(words)


def build_hint(path):
    """' (build it with: caffe-lite data ...)' for a missing data-set output, else ''."""
    command = build_command(path)
    return f" (build it with: {command})" if command else ""


def project_root():
    return Path(__file__).resolve().parents[2]


def find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = Path(directory) / name
        if path.is_file():
            return path
    raise CaffeError(f"{directory}: {stem}(.gz) not found")


def _check_outputs(paths):
    for path in paths:
        if os.path.exists(path):
            raise CaffeError(f"{path}: already exists; remove it first (nothing was overwritten)")


def write_images(path, images, labels, backend="lmdb", key_format="{:08d}"):
    """Raw uint8 Datums keyed by index, as convert_mnist_data writes them."""
    with DBWriter(path, backend) as db:
        for i in range(len(images)):
            db.put(key_format.format(i), array_to_datum(images[i], labels[i]).SerializeToString())
    LOG.info("Processed %d files into %s", len(images), path)


def write_mean(db_path, mean_path, backend="lmdb"):
    from ..io.binary import write_binary
    from .db import open_reader
    mean = compute_mean(value for _, value in open_reader(db_path, backend).items())
    write_binary(mean_path, mean_blob_proto(mean))
    LOG.info("Wrote the mean of %s to %s", db_path, mean_path)


def build_idx_dataset(name, src, out, files, pad=0, backend="lmdb", check_md5=True):
    """Train / test LMDBs and the training mean for an MNIST-format data set."""
    out = Path(out)
    train_db = out / f"{name}_train_{backend}"
    test_db = out / f"{name}_test_{backend}"
    mean_file = out / f"{name}_mean.binaryproto"
    _check_outputs([train_db, test_db, mean_file])
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(find_idx(src, f"{prefix}-images-idx3-ubyte"),
                          files[f"{prefix}-images-idx3-ubyte"] if check_md5 else None)
        labels = read_idx(find_idx(src, f"{prefix}-labels-idx1-ubyte"),
                          files[f"{prefix}-labels-idx1-ubyte"] if check_md5 else None)
        if len(images) != len(labels):
            raise CaffeError(f"{src}: {len(images)} {split} images but {len(labels)} labels")
        if pad:
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
        splits[split] = (images[:, None, :, :], labels)
    for split, db in (("train", train_db), ("test", test_db)):
        write_images(db, *splits[split], backend=backend)
    write_mean(train_db, mean_file, backend)
    return train_db, test_db, mean_file


def build_cifar10(archive, out, backend="lmdb", check_md5=True):
    """cifar10_train_lmdb, cifar10_test_lmdb and mean.binaryproto, as create_cifar10.sh."""
    from .cifar import read_cifar10
    out = Path(out)
    train_db = out / f"cifar10_train_{backend}"
    test_db = out / f"cifar10_test_{backend}"
    mean_file = out / "mean.binaryproto"
    _check_outputs([train_db, test_db, mean_file])
    train, test = read_cifar10(archive, check_md5)
    write_images(train_db, *train, backend=backend, key_format="{:05d}")
    write_images(test_db, *test, backend=backend, key_format="{:05d}")
    write_mean(train_db, mean_file, backend)
    return train_db, test_db, mean_file
