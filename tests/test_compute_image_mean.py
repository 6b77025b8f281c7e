"""compute_image_mean: the mean blob, Caffe's per-channel log lines, encoded Datums."""
import io
import re

import numpy as np
from PIL import Image

from caffe_lite.cli import main
from caffe_lite.data.datum import array_to_datum, encoded_datum
from caffe_lite.data.db import DBWriter
from caffe_lite.io.binary import read_blob_proto
from caffe_lite.io.blobs import blob_proto_to_array


def _db(path, images, encode=False):
    with DBWriter(path, "lmdb") as db:
        for i, img in enumerate(images):
            if encode:
                buf = io.BytesIO()
                Image.fromarray(img[::-1].transpose(1, 2, 0)).save(buf, "PNG")
                datum = encoded_datum(buf.getvalue(), i)
            else:
                datum = array_to_datum(img, i)
            db.put(f"{i:08d}", datum.SerializeToString())


def _logged_means(err):
    assert re.search(r"\] Number of channels: 3$", err, re.M)
    return [float(v) for v in re.findall(r"\] mean_value channel \[\d\]: (\S+)$", err, re.M)]


def test_mean_file_and_channel_means(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 4, 5)).astype(np.uint8)
    _db(tmp_path / "db", images)
    assert main(["compute_image_mean", "-backend", "lmdb", str(tmp_path / "db"),
                 str(tmp_path / "mean.binaryproto")]) == 0
    err = capsys.readouterr().err
    assert "Processed 7 files." in err
    bp = read_blob_proto(str(tmp_path / "mean.binaryproto"))
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 4, 5)
    want = images.astype(np.float64).mean(0)
    np.testing.assert_allclose(blob_proto_to_array(bp).reshape(3, 4, 5), want, rtol=1e-6)
    np.testing.assert_allclose(_logged_means(err), want.mean((1, 2)), rtol=1e-5)


def test_encoded_database_and_no_output_file(tmp_path, capsys):
    images = np.random.default_rng(1).integers(0, 256, (3, 3, 2, 2)).astype(np.uint8)
    _db(tmp_path / "db", images, encode=True)
    assert main(["compute_image_mean", str(tmp_path / "db")]) == 0
    np.testing.assert_allclose(_logged_means(capsys.readouterr().err),
                               images.astype(np.float64).mean((0, 2, 3)), rtol=1e-5)
    assert list(tmp_path.iterdir()) == [tmp_path / "db"]


def test_errors(tmp_path, capsys):
    assert main(["compute_image_mean", str(tmp_path / "nope"), str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    _db(tmp_path / "mixed", [np.zeros((1, 2, 2), np.uint8), np.zeros((1, 3, 2), np.uint8)])
    assert main(["compute_image_mean", str(tmp_path / "mixed"), str(tmp_path / "m")]) == 1
    assert not (tmp_path / "m").exists()
    assert main(["compute_image_mean"]) == 1
