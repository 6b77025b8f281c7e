"""Image files as Caffe reads them (io.cpp ReadImageToCVMat, cv::resize INTER_LINEAR).

read_image(path, height=0, width=0, is_color=True) -> (C, H, W) uint8, BGR for colour.
Resizing happens only when both height and width are positive, as in Caffe. Decoding goes
through Pillow, so JPEG pixels can differ from OpenCV's by the decoders' rounding (+-1).
"""
import numpy as np

from ..errors import CaffeError
from .datum import image_to_chw

# OpenCV's fixed-point resize coefficients (INTER_RESIZE_COEF_BITS = 11)
_COEF_SCALE = 1 << 11


def read_list_file(path):
    """[(filename, label)] from a Caffe list file: `path label` per line, split at the last
    space (so file names may hold spaces), blank lines ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise CaffeError(f"cannot open list file: {err.strerror}", path) from None
    except UnicodeDecodeError:
        raise CaffeError("list file is not text", path) from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        name, _, label = line.rstrip().rpartition(" ")
        try:
            lines.append((name, int(label)))
        except ValueError:
            raise CaffeError(f"expected 'path label', got '{line.strip()}'", path,
                             number) from None
        if not name:
            raise CaffeError(f"expected 'path label', got '{line.strip()}'", path, number)
    if not lines:
        raise CaffeError("list file is empty", path)
    return lines


def _taps(src, dst, clamp):
    """Source indices and 11-bit fixed-point weights of INTER_LINEAR along one axis. OpenCV
    moves the weight onto the edge pixel at the borders of x only; along y it keeps the
    weights and clamps the row indices, which rounds differently (and we match it)."""
    f = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    if clamp:
        low = s < 0
        high = s >= src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(image, height, width):
    """(C, H, W) uint8 -> (C, height, width) uint8, bit-exact with cv::resize INTER_LINEAR
    (OpenCV 4 on x86): pixel centres aligned, src = (dst + 0.5) * scale - 0.5, two taps per
    axis, no anti-aliasing. Rows are first mixed with 11-bit weights, then columns of those
    sums with OpenCV's SIMD rounding: ((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16),
    then (+ 2) >> 2. An exact 2x reduction equals the 2x2 average (OpenCV's INTER_AREA)."""
    channels, src_h, src_w = image.shape
    if (src_h, src_w) == (height, width):
        return image
    x0, x1, a0, a1 = _taps(src_w, width, clamp=True)
    y0, y1, b0, b1 = _taps(src_h, height, clamp=False)
    src = image.astype(np.int64)
    rows = (src[:, :, x0] * a0 + src[:, :, x1] * a1) >> 4
    out = ((rows[:, y0, :] * b0[:, None]) >> 16) + ((rows[:, y1, :] * b1[:, None]) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def read_image(path, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: decode (colour forced to 3 channels, or grayscale) and
    resize when both height and width are positive."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
            array = image_to_chw(img, force_color=is_color, force_gray=not is_color)
    except OSError as err:
        if err.strerror:    # not there or not readable
            raise CaffeError(f"Could not open or find file {path} ({err.strerror})") from None
        raise CaffeError(f"Could not decode image {path} ({err})") from None
    except Exception as err:  # Pillow: ValueError, DecompressionBombError, ...
        raise CaffeError(f"Could not decode image {path} ({err})") from None
    if height > 0 and width > 0:
        array = resize_linear(array, height, width)
    return array
