"""ImageData: list files of PNG/JPEG images, resize (cv::resize INTER_LINEAR), gray, shuffle,
rand_skip, exact resume."""
import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN, set_random_seed
from caffe_lite.data.image import read_list_file, resize_linear
from caffe_lite.errors import CaffeError
from caffe_lite.layers import create_layer
from caffe_lite.proto import caffe_pb2

# cv2.resize(src, (w, h)) with INTER_LINEAR, OpenCV 4.14 (x86)
CV_UP_SRC = [[207, 21, 45, 60, 46], [205, 222, 149, 10, 24], [85, 110, 159, 122, 67]]
CV_UP_4x7 = [[207, 101, 28, 45, 55, 54, 46], [206, 172, 136, 110, 52, 30, 32],
             [160, 171, 172, 153, 81, 47, 40], [85, 99, 124, 159, 132, 98, 67]]
CV_DOWN_SRC = [[40, 177, 188, 8, 29, 115, 100, 227], [132, 107, 110, 170, 150, 44, 188, 193],
               [244, 201, 72, 81, 166, 166, 178, 222], [74, 240, 0, 19, 249, 241, 76, 35],
               [80, 11, 228, 169, 149, 62, 120, 48], [197, 121, 7, 65, 180, 133, 95, 64]]
CV_DOWN_5x3 = [[150, 33, 128], [140, 149, 188], [210, 129, 127], [79, 151, 96], [123, 126, 92]]


@pytest.mark.parametrize("src, want", [(CV_UP_SRC, CV_UP_4x7), (CV_DOWN_SRC, CV_DOWN_5x3)])
def test_resize_matches_opencv_inter_linear(src, want):
    want = np.array(want, np.uint8)
    got = resize_linear(np.array(src, np.uint8)[None], *want.shape)
    np.testing.assert_array_equal(got[0], want)


def test_resize_by_half_is_the_2x2_average_and_same_size_is_identity():
    img = np.random.default_rng(0).integers(0, 256, (3, 8, 6)).astype(np.uint8)
    want = (img.reshape(3, 4, 2, 3, 2).astype(int).sum((2, 4)) + 2) // 4
    np.testing.assert_array_equal(resize_linear(img, 4, 3), want)
    assert resize_linear(img, 8, 6) is img


def _write_images(folder, n=6, shape=(10, 12)):
    """Alternating PNG / JPEG colour images; returns (list lines, RGB arrays)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    lines, arrays = [], []
    for i in range(n):
        rgb = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
        name = f"sub dir/img{i}.{'png' if i % 2 == 0 else 'jpg'}"
        (folder / "sub dir").mkdir(exist_ok=True)
        Image.fromarray(rgb).save(folder / name)
        lines.append(f"{name} {10 + i}")
        arrays.append(np.asarray(Image.open(folder / name).convert("RGB")))
    return lines, arrays


def _layer(tmp_path, lines, params="", transform="", phase=TEST):
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    net = caffe_pb2.NetParameter()
    text_format.Parse(f"""layer {{ name: "d" type: "ImageData" top: "data" top: "label"
        transform_param {{ {transform} }}
        image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{tmp_path}/img/"
                            {params} }} }}""", net)
    layer = create_layer(net.layer[0], phase)
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


def _epoch(layer, top, batches):
    data, labels = [], []
    for _ in range(batches):
        layer.forward([], top)
        data.append(top[0].data.copy())
        labels.append(top[1].data.copy())
    return np.concatenate(data), np.concatenate(labels)


def test_reads_png_and_jpeg_as_bgr_and_wraps(tmp_path):
    lines, rgb = _write_images(tmp_path / "img")
    layer, top = _layer(tmp_path, lines, "batch_size: 4")
    assert top[0].shape == (4, 3, 10, 12)
    data, labels = _epoch(layer, top, 2)
    np.testing.assert_array_equal(labels, [10, 11, 12, 13, 14, 15, 10, 11])
    for i, j in enumerate([0, 1, 2, 3, 4, 5, 0, 1]):
        np.testing.assert_array_equal(data[i], rgb[j][:, :, ::-1].transpose(2, 0, 1))


def test_resize_gray_and_transform(tmp_path):
    lines, rgb = _write_images(tmp_path / "img", n=2)
    layer, top = _layer(tmp_path, lines, "batch_size: 2 new_height: 7 new_width: 5 "
                        "is_color: false", "scale: 0.5 mean_value: 3")
    layer.forward([], top)
    assert top[0].shape == (2, 1, 7, 5)
    for i in range(2):
        gray = np.asarray(Image.fromarray(rgb[i]).convert("L"))[None]
        want = (resize_linear(gray, 7, 5).astype(np.float32) - 3) * 0.5
        np.testing.assert_array_equal(top[0].data[i], want)


def test_crop_accepts_images_of_different_sizes(tmp_path):
    (tmp_path / "img").mkdir()
    for i, shape in enumerate([(9, 9), (12, 10)]):
        Image.fromarray(np.full(shape, 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    layer, top = _layer(tmp_path, ["0.png 0", "1.png 1"], "batch_size: 2",
                        "crop_size: 8 mirror: true", TRAIN)
    layer.forward([], top)
    assert top[0].shape == (2, 3, 8, 8)
    assert (top[0].data[1] == 40).all()
    layer, top = _layer(tmp_path, ["0.png 0", "1.png 1"], "batch_size: 2")
    with pytest.raises(CaffeError, match="differ in size"):
        layer.forward([], top)


def test_shuffle_is_reproducible_reshuffles_each_epoch_and_resumes(tmp_path):
    lines, _ = _write_images(tmp_path / "img", n=6, shape=(4, 4))
    params = "batch_size: 3 shuffle: true"
    set_random_seed(11)
    layer, top = _layer(tmp_path, lines, params)
    _, labels = _epoch(layer, top, 8)      # four epochs
    epochs = labels.reshape(4, 6)
    for e in epochs:
        assert sorted(e) == list(range(10, 16))
    assert len({tuple(e) for e in epochs}) > 1
    assert list(epochs[0]) != list(range(10, 16)) or list(epochs[1]) != list(range(10, 16))
    set_random_seed(11)
    again, top2 = _layer(tmp_path, lines, params)
    np.testing.assert_array_equal(_epoch(again, top2, 8)[1], labels)
    # resume from batch 3 in a fresh layer
    set_random_seed(11)
    first, top3 = _layer(tmp_path, lines, params)
    _epoch(first, top3, 3)
    fresh, top4 = _layer(tmp_path, lines, params)
    fresh.set_state(first.get_state())
    np.testing.assert_array_equal(_epoch(fresh, top4, 5)[1], labels[9:])


def test_rand_skip_starts_inside_the_first_epoch_only(tmp_path):
    lines, _ = _write_images(tmp_path / "img", n=6, shape=(4, 4))
    set_random_seed(3)
    layer, top = _layer(tmp_path, lines, "batch_size: 6 rand_skip: 5")
    _, labels = _epoch(layer, top, 2)
    skip = layer.skip
    assert 0 <= skip < 5
    np.testing.assert_array_equal(labels, [10 + (skip + i) % 6 for i in range(12)])


def test_bad_list_and_missing_images_are_one_line_errors(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(CaffeError, match=r"list.txt:2: expected 'path label'"):
        _layer(tmp_path, ["a.png 1", "b.png x"], "batch_size: 1")
    with pytest.raises(CaffeError, match="Could not load missing.png"):
        _layer(tmp_path, ["missing.png 1"], "batch_size: 1")
    with pytest.raises(CaffeError, match="list file is empty"):
        read_list_file_path = tmp_path / "empty.txt"
        read_list_file_path.write_text("\n")
        read_list_file(read_list_file_path)
