"""Caffe's DataTransformer: `transform_param` applied to a batch of (C, H, W) images.

Order and semantics as data_transformer.cpp: crop (random offsets in TRAIN, centred in TEST),
mirror (a coin flip per image whenever `mirror` is set, in either phase, as Caffe does),
subtract the mean (`mean_file` indexed at the source pixel, or one `mean_value` per channel),
then multiply by `scale`. `force_color` / `force_gray` act when an encoded datum is decoded.
"""
import os

import numpy as np

from ..common import TEST
from ..errors import CaffeError
from ..kernels.transform import transform_batch


class DataTransformer:
    def __init__(self, param, phase, mean_loader=None):
        self.param = param
        self.phase = phase
        self.crop = int(param.crop_size)
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if param.HasField("mean_file") and len(param.mean_value):
            raise CaffeError("transform_param: specify either mean_file or mean_value, not both")
        self.mean_file = None
        if param.HasField("mean_file"):
            self.mean_file = _read_mean_file(param.mean_file)
        self.mean_values = np.asarray(param.mean_value, np.float32)
        self._mean_cache = {}

    def output_shape(self, channels, height, width):
        """The (C, h, w) of a transformed (C, H, W) image; raises if the transform cannot
        apply to it (the layers call it at setup, where the error can name the prototxt)."""
        self._mean(channels, height, width)
        if self.crop:
            if self.crop > height or self.crop > width:
                raise CaffeError(f"transform_param.crop_size {self.crop} is larger than the "
                                 f"image ({height}x{width})")
            return channels, self.crop, self.crop
        return channels, height, width

    def _mean(self, channels, height, width):
        key = (channels, height, width)
        if key not in self._mean_cache:
            self._mean_cache[key] = self._build_mean(channels, height, width)
        return self._mean_cache[key]

    def _build_mean(self, channels, height, width):
        if self.mean_file is not None:
            if self.mean_file.shape != (channels, height, width):
                raise CaffeError(f"transform_param.mean_file '{self.param.mean_file}' has shape "
                                 f"{self.mean_file.shape}; the data is ({channels}, {height}, "
                                 f"{width})")
            return self.mean_file
        mean = np.zeros((channels, height, width), np.float32)
        if len(self.mean_values) == 1:
            mean[...] = self.mean_values[0]
        elif len(self.mean_values):
            if len(self.mean_values) != channels:
                raise CaffeError(f"transform_param has {len(self.mean_values)} mean_value "
                                 f"entries for {channels} channels (give 1 or {channels})")
            mean[...] = self.mean_values[:, None, None]
        return mean

    def draw(self, rng, num, height, width):
        """The random choices for `num` images: (h_off, w_off, mirror) arrays."""
        h_off = np.zeros(num, np.int64)
        w_off = np.zeros(num, np.int64)
        if self.crop:
            if self.phase == TEST:
                h_off[:] = (height - self.crop) // 2
                w_off[:] = (width - self.crop) // 2
            else:
                h_off[:] = rng.integers(0, height - self.crop + 1, num)
                w_off[:] = rng.integers(0, width - self.crop + 1, num)
        mirror = rng.integers(0, 2, num).astype(np.bool_) if self.mirror \
            else np.zeros(num, np.bool_)
        return h_off, w_off, mirror

    def transform(self, images, rng, out=None):
        """images: (N, C, H, W) uint8 or float32 -> (N, C, h, w) float32."""
        num, channels, height, width = images.shape
        shape = (num,) + self.output_shape(channels, height, width)
        if out is None:
            out = np.empty(shape, np.float32)
        h_off, w_off, mirror = self.draw(rng, num, height, width)
        transform_batch(images, h_off, w_off, mirror, self._mean(channels, height, width),
                        self.scale, out)
        return out


def _read_mean_file(path):
    """The (C, H, W) float32 mean of a .binaryproto; errors name the field that gave the path."""
    from ..io.binary import read_blob_proto
    from ..io.blobs import blob_proto_to_array
    try:
        mean = blob_proto_to_array(read_blob_proto(path))
    except CaffeError as err:
        from .datasets import build_hint
        hint = "" if os.path.exists(path) else build_hint(path)
        raise CaffeError(f"transform_param.mean_file '{path}': {err.bare_message}{hint}") \
            from None
    return np.ascontiguousarray(mean.reshape(mean.shape[-3:]), np.float32)
