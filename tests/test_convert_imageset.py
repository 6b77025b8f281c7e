"""convert_imageset: round trips through the Data layer, encoded / raw / gray / resize,
-check_size, -shuffle, and one-line errors that leave no database behind."""
import numpy as np
from google.protobuf import text_format
from PIL import Image

from caffe_lite.blob import Blob
from caffe_lite.cli import main
from caffe_lite.common import TEST
from caffe_lite.data.datum import datum_from_bytes
from caffe_lite.data.db import open_reader
from caffe_lite.data.image import resize_linear
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2


def _images(root, n=5, shapes=None):
    rng = np.random.default_rng(4)
    root.mkdir(parents=True, exist_ok=True)
    lines, rgb = [], []
    for i in range(n):
        shape = shapes[i] if shapes else (6, 7)
        arr = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
        name = f"im{i}.png"
        Image.fromarray(arr).save(root / name)
        lines.append(f"{name} {i % 3}")
        rgb.append(arr)
    return lines, rgb


def _convert(tmp_path, lines, *flags, db="db"):
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return main(["convert_imageset", *flags, f"{tmp_path / 'img'}/", str(tmp_path / "list.txt"),
                 str(tmp_path / db)])


def _read_all(db, n, transform=""):
    net = caffe_pb2.NetParameter()
    text_format.Parse(f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
        transform_param {{ {transform} }}
        data_param {{ source: "{db}" batch_size: {n} backend: LMDB }} }}""", net)
    layer = create_layer(net.layer[0], TEST)
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.forward([], top)
    return top[0].data.copy(), top[1].data.copy()


def _bgr(rgb):
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def test_raw_and_encoded_png_give_the_same_pixels(tmp_path, capsys):
    lines, rgb = _images(tmp_path / "img")
    assert _convert(tmp_path, lines, db="raw") == 0
    assert _convert(tmp_path, lines, "-encoded", db="enc") == 0
    assert "Processed 5 files." in capsys.readouterr().err
    raw, labels = _read_all(tmp_path / "raw", 5)
    enc, labels2 = _read_all(tmp_path / "enc", 5)
    np.testing.assert_array_equal(raw, np.stack([_bgr(a) for a in rgb]))
    np.testing.assert_array_equal(enc, raw)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(labels2, labels)
    items = list(open_reader(str(tmp_path / "enc")).items())
    assert [k for k, _ in items] == [f"{i:08d}_im{i}.png".encode() for i in range(5)]
    first = datum_from_bytes(items[0][1])
    # encoded keeps the file's own bytes when nothing asks for re-encoding
    assert first.encoded and first.data == (tmp_path / "img" / "im0.png").read_bytes()


def test_gray_resize_and_reencode(tmp_path):
    lines, rgb = _images(tmp_path / "img", n=2)
    assert _convert(tmp_path, lines, "-gray", "-resize_height", "4", "-resize_width=5",
                    db="gray") == 0
    data, _ = _read_all(tmp_path / "gray", 2)
    assert data.shape == (2, 1, 4, 5)
    for i in range(2):
        gray = np.asarray(Image.fromarray(rgb[i]).convert("L"))[None]
        np.testing.assert_array_equal(data[i], resize_linear(gray, 4, 5))
    # png -> encode_type png with a resize must re-encode the resized pixels (lossless)
    assert _convert(tmp_path, lines, "-encode_type", "png", "-resize_height", "3",
                    "-resize_width", "3", db="png") == 0
    datum = datum_from_bytes(next(open_reader(str(tmp_path / "png")).items())[1])
    assert datum.encoded
    enc, _ = _read_all(tmp_path / "png", 2)
    np.testing.assert_array_equal(enc[0], resize_linear(_bgr(rgb[0]).astype(np.uint8), 3, 3))


def test_shuffle_is_seeded_and_keeps_every_image(tmp_path):
    lines, _ = _images(tmp_path / "img", n=5)
    assert _convert(tmp_path, lines, "-shuffle", "-seed", "9", db="a") == 0
    assert _convert(tmp_path, lines, "-shuffle", "-seed", "9", db="b") == 0
    keys_a = [k for k, _ in open_reader(str(tmp_path / "a")).items()]
    keys_b = [k for k, _ in open_reader(str(tmp_path / "b")).items()]
    assert keys_a == keys_b
    assert sorted(k.split(b"_", 1)[1] for k in keys_a) == [f"im{i}.png".encode()
                                                            for i in range(5)]
    assert [k[:8] for k in keys_a] == [f"{i:08d}".encode() for i in range(5)]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [line for line in err if not line.startswith(("I", "W"))]


def test_check_size_errors_on_mismatched_sizes(tmp_path, capsys):
    lines, _ = _images(tmp_path / "img", n=3, shapes=[(6, 7), (6, 7), (5, 7)])
    assert _convert(tmp_path, lines, db="ok") == 0       # without -check_size: accepted
    assert _convert(tmp_path, lines, "-check_size", db="bad") == 1
    err = _one_error_line(capsys)
    assert len(err) == 1 and "im2.png" in err[0] and "Incorrect data field size" in err[0]
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_bad_list_missing_image_and_existing_db(tmp_path, capsys):
    lines, _ = _images(tmp_path / "img", n=2)
    assert _convert(tmp_path, lines + ["no label here"], db="bad1") == 1
    err = _one_error_line(capsys)
    assert len(err) == 1 and "list.txt:3" in err[0]
    assert _convert(tmp_path, lines + ["gone.png 1"], db="bad2") == 1
    err = _one_error_line(capsys)
    assert len(err) == 1 and "gone.png" in err[0]
    assert not (tmp_path / "bad1").exists() and not (tmp_path / "bad2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert _convert(tmp_path, lines, db="db") == 0
    assert _convert(tmp_path, lines, db="db") == 1
    assert "already exists" in _one_error_line(capsys)[0]
    assert main(["convert_imageset", "only-one-arg"]) == 1
