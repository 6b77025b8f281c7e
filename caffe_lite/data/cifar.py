"""CIFAR-10 from the user's official archive (binary or python version), as Caffe's
convert_cifar_data: raw 3x32x32 Datums in the archive's R, G, B plane order, keys "%05d"."""
import hashlib
import pickle
import tarfile

import numpy as np

from ..errors import CaffeError

ARCHIVE_MD5 = {
    "c32a1d4ab5d03f1284b67883e8d87530": "binary",   # cifar-10-binary.tar.gz
    "c58f30108f718f92721af3b95e74349a": "python",   # cifar-10-python.tar.gz
}
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
RECORD = 1 + 3 * 32 * 32


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _members(tar):
    """{batch name: member} for whichever version the archive holds."""
    found = {}
    for member in tar.getmembers():
        base = member.name.rsplit("/", 1)[-1]
        stem = base[:-4] if base.endswith(".bin") else base
        if stem in TRAIN_BATCHES or stem == TEST_BATCH:
            found[stem] = (member, base.endswith(".bin"))
    missing = [b for b in TRAIN_BATCHES + [TEST_BATCH] if b not in found]
    if missing:
        raise CaffeError(f"not a CIFAR-10 archive: {', '.join(missing)} missing")
    return found


def _parse_binary(raw, name):
    if len(raw) % RECORD:
        raise CaffeError(f"{name}: {len(raw)} bytes is not a whole number of CIFAR records "
                         "(truncated?)")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _parse_python(raw, name):
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], np.int64)
    except Exception as err:
        raise CaffeError(f"{name}: not a CIFAR-10 python batch ({err})") from None
    if len(data) != len(labels):
        raise CaffeError(f"{name}: {len(data)} images but {len(labels)} labels")
    return data, labels


def read_cifar10(path, check_md5=True):
    """((train images, labels), (test images, labels)) from a CIFAR-10 .tar.gz."""
    if check_md5:
        got = _md5(path)
        if got not in ARCHIVE_MD5:
            raise CaffeError(f"{path}: MD5 {got} is not that of the official CIFAR-10 archive "
                             "(cifar-10-binary.tar.gz or cifar-10-python.tar.gz)")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _members(tar)
            parts = {}
            for stem, (member, is_binary) in members.items():
                raw = tar.extractfile(member).read()
                parse = _parse_binary if is_binary else _parse_python
                parts[stem] = parse(raw, member.name)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise CaffeError(f"{path}: bad or truncated archive ({err})") from None
    train = (np.concatenate([parts[b][0] for b in TRAIN_BATCHES]),
             np.concatenate([parts[b][1] for b in TRAIN_BATCHES]))
    return train, parts[TEST_BATCH]
