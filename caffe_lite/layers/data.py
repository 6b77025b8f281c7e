"""Data: batches of Datums from an LMDB (or LevelDB) database, Caffe's DataLayer.

data_param: source, batch_size, backend (LEVELDB default, as Caffe; LMDB), rand_skip (skip
a random count < rand_skip at the start), prefetch (queue depth, default 4). Reading wraps
around at the end of the database. Tops: data (N, C, h, w) transformed by transform_param,
and optionally label (N,).
"""
import numpy as np

from ..data.datum import datum_from_bytes, datum_to_array
from ..data.db import open_reader
from ..errors import CaffeError
from . import register
from .base_data import PrefetchingDataLayer, source_error


@register("Data")
class DataLayer(PrefetchingDataLayer):
    def prefetch_depth(self):
        return self.param.data_param.prefetch or 4

    def data_setup(self, bottom, top):
        p = self.param.data_param
        if p.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        self.batch_size = int(p.batch_size)
        try:
            self.reader = open_reader(p.source, p.backend)
        except CaffeError as err:
            raise source_error(self, "data_param.source", p.source, err) from None
        self.rand_skip = int(p.rand_skip)
        self._set_skip()
        self._next_record = None
        first, _ = self._decode([self._peek()])
        item_shape = self.transformer.output_shape(*first.shape[1:])
        top[0].reshape((self.batch_size,) + item_shape)
        if self.output_labels:
            top[1].reshape((self.batch_size,))

    def _set_skip(self):
        # drawn from the layer seed, so the state (seed, batch_index) fixes it on resume
        self.skip = (int(np.random.default_rng([self.seed, 2]).integers(0, self.rand_skip))
                     if self.rand_skip else 0)

    def set_state(self, state):
        super().set_state(state)
        self._set_skip()

    def _peek(self):
        self.reader.seek(self.skip)
        value = self.reader.next_value()
        self._next_record = None
        return value

    def _decode(self, values):
        datums = [datum_from_bytes(v) for v in values]
        labels = np.array([d.label for d in datums], np.float32)
        first = datums[0]
        if not first.encoded and first.data and all(
                d.data and not d.encoded and d.channels == first.channels
                and d.height == first.height and d.width == first.width for d in datums):
            # raw uint8 datums: one join and one view, no per-image arrays
            flat = np.frombuffer(b"".join(d.data for d in datums), np.uint8)
            return flat.reshape(len(datums), first.channels, first.height, first.width), labels
        t = self.transformer
        arrays = [datum_to_array(d, t.force_color, t.force_gray) for d in datums]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise self.error("images in one batch differ in shape; resize them when "
                             "building the database (convert_imageset -resize_height/-width)")
        return np.stack(arrays), labels

    def load_batch(self, k):
        start = (self.skip + k * self.batch_size) % self.reader.count
        if self._next_record != start:
            self.reader.seek(start)
        values = [self.reader.next_value() for _ in range(self.batch_size)]
        self._next_record = (start + self.batch_size) % self.reader.count
        images, labels = self._decode(values)
        return self.transformer.transform(images, self.batch_rng(k)), labels
