"""MemoryData: batches from arrays handed in from Python, Caffe's MemoryDataLayer.

memory_data_param: batch_size, channels, height, width (all required, positive).
Tops: data (batch_size, channels, height, width) and label (batch_size,).

Feeding, as Caffe:
  * reset(data, labels, n) / set_input_arrays(net, data, labels) (pycaffe's
    net.set_input_arrays): float arrays (n, C, H, W) and (n,) or (n, 1, 1, 1), n a multiple
    of batch_size, used as they are: transform_param is NOT applied (Caffe warns likewise).
  * add_mat_vector(images, labels) / add_datum_vector(datums): images (N, C, H, W) or
    Datums go through the DataTransformer (crop, mirror, mean, scale) first.
Each forward serves the next batch_size rows and wraps around after n rows.
"""
import numpy as np

from ..common import rng
from ..data.datum import datum_to_array
from ..data.transformer import DataTransformer
from ..errors import CaffeError
from ..log import LOG
from . import register
from .base import Layer


@register("MemoryData")
class MemoryDataLayer(Layer):
    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.channels, self.height, self.width = int(p.channels), int(p.height), int(p.width)
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.error("batch_size, channels, height, and width must be specified and "
                             "positive in memory_data_param")
        self.transformer = DataTransformer(self.param.transform_param, self.phase)
        self.data = self.labels = None
        self.n = self.pos = 0
        self.has_new_data = False

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        top[1].reshape((self.batch_size,))

    def _check_shapes(self, data, labels):
        if data.ndim != 4 or data.shape[1:] != (self.channels, self.height, self.width):
            raise self.error(f"data array of shape {data.shape}; expected (n, {self.channels}, "
                             f"{self.height}, {self.width})")
        if labels.shape[0] != data.shape[0] or labels.size != labels.shape[0]:
            raise self.error(f"labels array of shape {labels.shape} for {data.shape[0]} "
                             "images; expected (n,) or (n, 1, 1, 1)")

    def reset(self, data, labels, n=None):
        """Serve `data` / `labels` from the start, untransformed (Caffe's Reset)."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        n = data.shape[0] if n is None else int(n)
        if n <= 0 or n % self.batch_size:
            raise self.error(f"n = {n} must be a positive multiple of batch size "
                             f"{self.batch_size}")
        self._check_shapes(data[:n], labels[:n])
        if self.param.HasField("transform_param"):
            LOG.warning("MemoryData does not transform array data on Reset()")
        self.data = data
        self.labels = labels.reshape(labels.shape[0])
        self.n, self.pos = n, 0

    def add_mat_vector(self, images, labels):
        """Transform `images` (N, C, H, W) and serve them (Caffe's AddMatVector)."""
        if self.has_new_data:
            raise self.error("Can't add data until current data has been consumed.")
        images = np.asarray(images)
        labels = np.asarray(labels, np.float32).reshape(-1)
        if images.ndim != 4 or len(images) == 0 or len(images) != len(labels):
            raise self.error(f"add_mat_vector needs (N, C, H, W) images and N labels, got "
                             f"{images.shape} and {labels.shape}")
        if len(images) % self.batch_size:
            raise self.error("The added data must be a multiple of the batch size.")
        out = self.transformer.transform(images, rng())
        self.reset(out.astype(self.dtype, copy=False), labels.astype(self.dtype), len(out))
        self.has_new_data = True

    def add_datum_vector(self, datums):
        """Decode, transform and serve a list of Datums (Caffe's AddDatumVector)."""
        if not datums:
            raise self.error("There is no datum to add.")
        t = self.transformer
        images = np.stack([datum_to_array(d, t.force_color, t.force_gray) for d in datums])
        self.add_mat_vector(images, [d.label for d in datums])

    def set_batch_size(self, batch_size):
        if self.has_new_data:
            raise self.error("Can't change batch_size until current data has been consumed.")
        self.batch_size = int(batch_size)

    def forward_cpu(self, bottom, top):
        if self.data is None:
            raise self.error("MemoryDataLayer needs to be initialized by calling Reset "
                             "(net.set_input_arrays)")
        top[0].data[...] = self.data[self.pos:self.pos + self.batch_size]
        top[1].data[...] = self.labels[self.pos:self.pos + self.batch_size]
        self.pos = (self.pos + self.batch_size) % self.n
        if self.pos == 0:
            self.has_new_data = False


def set_input_arrays(net, data, labels):
    """pycaffe's Net.set_input_arrays: feed the net's first layer, which must be MemoryData."""
    layer = net.layers[0] if net.layers else None
    if not isinstance(layer, MemoryDataLayer):
        raise CaffeError("set_input_arrays may only be called if the first layer is a "
                         "MemoryDataLayer")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.shape[:1] != labels.shape[:1]:
        raise CaffeError("data and labels must have the same first dimension")
    if data.shape[0] % layer.batch_size:
        raise CaffeError("first dimensions of input arrays must be a multiple of batch size")
    layer.reset(data, labels, data.shape[0])
