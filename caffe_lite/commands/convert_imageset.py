"""`caffe-lite convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME`: Caffe's
tools/convert_imageset.cpp.

LISTFILE holds `subfolder1/file1.JPEG 7` per line. Each image becomes a Datum under the key
"%08d_<filename>" (its line number after the optional shuffle): raw BGR pixels, or with
-encoded the file's own bytes, re-encoded only when -resize_* or -encode_type (an extension
other than the file's) asks for it. Caffe's flags: -gray, -shuffle, -backend lmdb|leveldb,
-resize_width, -resize_height, -check_size, -encoded, -encode_type. Unlike Caffe, a missing
or unreadable image stops the conversion (one error line, nothing written) instead of being
skipped; the output database must not exist yet.
"""
import io
import os

import numpy as np

from ..cli import Flag, command, parse_flags, usage_line
from ..common import rng
from ..data.datum import array_to_datum, encoded_datum
from ..data.db import DBWriter
from ..data.image import read_image, read_list_file
from ..errors import CaffeError
from ..log import LOG

FLAGS = [
    Flag("gray", False, bool, "When this option is on, treat images as grayscale ones."),
    Flag("shuffle", False, bool, "Randomly shuffle the order of images and their labels."),
    Flag("backend", "lmdb", str, "The backend {lmdb, leveldb} for storing the result."),
    Flag("resize_width", 0, int, "Width images are resized to."),
    Flag("resize_height", 0, int, "Height images are resized to."),
    Flag("check_size", False, bool, "When this option is on, check that all the datum have "
                                    "the same size."),
    Flag("encoded", False, bool, "When this option is on, store the encoded image in the "
                                 "datum."),
    Flag("encode_type", "", str, "Optional; what type the image is encoded as ('png', "
                                 "'jpg', ...)."),
    Flag("seed", 0, int, "Seed of -shuffle (0: a random one)."),
]

# Pillow's writer name for each extension cv::imencode accepts
_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "bmp": "BMP",
                "tif": "TIFF", "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM",
                "webp": "WEBP"}


def _extension(name):
    dot = name.rfind(".")
    return name[dot + 1:].lower() if dot >= 0 else name.lower()


def _match_ext(name, encoding):
    """Caffe's matchExt: the file already has the requested encoding (jpg == jpeg)."""
    ext, enc = _extension(name), encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def encode_image(chw, encoding):
    """cv::imencode("." + encoding): (C, H, W) BGR uint8 -> file bytes."""
    from PIL import Image
    fmt = _PIL_FORMATS.get(encoding.lower())
    if fmt is None:
        raise CaffeError(f"cannot encode images as '{encoding}' (known: "
                         f"{', '.join(sorted(_PIL_FORMATS))})")
    if chw.shape[0] == 1:
        img = Image.fromarray(chw[0], "L")
    else:
        img = Image.fromarray(chw[::-1].transpose(1, 2, 0), "RGB")
    buf = io.BytesIO()
    # OpenCV's defaults: JPEG quality 95, PNG compression 1 (fast)
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 1}}.get(fmt, {})
    img.save(buf, fmt, **options)
    return buf.getvalue()


def image_to_datum(path, name, label, height, width, is_color, encoding):
    """Caffe's ReadImageToDatum: (datum, (C, H, W) of the decoded image)."""
    image = read_image(path, height, width, is_color)
    if not encoding:
        return array_to_datum(image, label), image.shape
    if not height and not width and _match_ext(name, encoding):
        # the file already is what was asked for: keep its bytes
        with open(path, "rb") as f:
            return encoded_datum(f.read(), label), image.shape
    return encoded_datum(encode_image(image, encoding), label), image.shape


def convert_imageset(root, list_file, db_path, gray=False, shuffle=False, backend="lmdb",
                     resize_width=0, resize_height=0, check_size=False, encoded=False,
                     encode_type="", seed=0):
    lines = read_list_file(list_file)
    if shuffle:
        LOG.info("Shuffling data")
        seed = seed or int(rng().integers(0, 2**63 - 1))
        lines = [lines[i] for i in np.random.default_rng(seed).permutation(len(lines))]
    LOG.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        LOG.info("encode_type specified, assuming encoded=true.")
    height, width = max(0, resize_height), max(0, resize_width)
    if (height > 0) != (width > 0):
        LOG.warning("only one of -resize_height / -resize_width is set: images are not "
                    "resized (Caffe resizes only when both are given)")
    size = None
    count = 0
    with DBWriter(db_path, backend) as db:
        for line_id, (name, label) in enumerate(lines):
            encoding = encode_type
            if encoded and not encoding:
                # guess the encoding from the file name, as Caffe does
                if "." not in name:
                    LOG.warning("Failed to guess the encoding of '%s'", name)
                encoding = _extension(name)
            path = root + name
            datum, shape = image_to_datum(path, name, label, height, width, not gray,
                                          encoding)
            if check_size:
                if size is None:
                    size = shape
                elif shape != size:
                    raise CaffeError(f"{list_file}: {name} is {shape[1]}x{shape[2]}x"
                                     f"{shape[0]} (HxWxC), the first image is {size[1]}x"
                                     f"{size[2]}x{size[0]} (Incorrect data field size)")
            db.put(f"{line_id:08d}_{name}", datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                LOG.info("Processed %d files.", count)
    if count % 1000 != 0:
        LOG.info("Processed %d files.", count)
    return count


@command("convert_imageset", "image files + list file -> LMDB/LevelDB of Datums",
         "[flags] ROOTFOLDER/ LISTFILE DB_NAME")
def convert_imageset_command(argv):
    values, positional = parse_flags(argv, FLAGS)
    if len(positional) != 3:
        raise CaffeError(usage_line("convert_imageset") + " (-help lists the flags)")
    root, list_file, db_path = positional
    if not os.path.isfile(list_file):
        raise CaffeError(f"{list_file}: no such list file")
    convert_imageset(root, list_file, db_path, **values)
    return 0
