"""ImageData: batches of image files named in a list file, Caffe's ImageDataLayer.

image_data_param: source (list file, `path label` per line), root_folder ("", prefixed to
each path), batch_size (1), shuffle (false; reshuffled at every wrap, as Caffe),
rand_skip (0: skip a random count < rand_skip at the start, first epoch only),
new_height / new_width (0: resize with cv::resize INTER_LINEAR when both are set),
is_color (true: 3 channels BGR; false: 1 gray channel). transform_param as Data.
Tops: data (N, C, h, w) and label (N,). Images in one batch may differ in size only when
crop_size makes the outputs agree (as Caffe; batch_size 1 accepts any size).

Item i of batch k is list position g = skip + k * batch_size + i: epoch g // n, entry g % n
of that epoch's order (a seeded Fisher-Yates permutation per epoch when shuffling), so
get_state / set_state resume exactly.
"""
import os

import numpy as np

from ..data.image import read_image, read_list_file
from ..errors import CaffeError
from . import register
from .base_data import PrefetchingDataLayer, source_error


@register("ImageData")
class ImageDataLayer(PrefetchingDataLayer):
    exact_num_top = 2
    min_top = max_top = None

    def data_setup(self, bottom, top):
        p = self.param.image_data_param
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.error("new_height and new_width must be set at the same time")
        if p.batch_size <= 0:
            raise self.error("image_data_param.batch_size must be positive")
        self.batch_size = int(p.batch_size)
        self.new_size = (int(p.new_height), int(p.new_width))
        self.is_color = bool(p.is_color)
        self.shuffle = bool(p.shuffle)
        self.root = p.root_folder
        try:
            self.lines = read_list_file(p.source)
        except CaffeError as err:
            raise source_error(self, "image_data_param.source", p.source, err) from None
        self.rand_skip = int(p.rand_skip)
        if self.rand_skip and self.rand_skip > len(self.lines):
            raise self.error(f"rand_skip {self.rand_skip} exceeds the {len(self.lines)} "
                             "images of the list (Not enough points to skip)")
        self._set_skip()
        self._orders = {}
        first = self._read(self._entry(0))
        item_shape = self.transformer.output_shape(*first.shape)
        top[0].reshape((self.batch_size,) + item_shape)
        top[1].reshape((self.batch_size,))

    def _set_skip(self):
        # drawn from the layer seed, so the state (seed, batch_index) fixes it on resume
        self.skip = (int(np.random.default_rng([self.seed, 2]).integers(0, self.rand_skip))
                     if self.rand_skip else 0)

    def _order(self, epoch):
        if not self.shuffle:
            return None
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.lines))
            self._orders = {epoch: order}
        return order

    def _entry(self, position):
        epoch, index = divmod(self.skip + position, len(self.lines))
        order = self._order(epoch)
        return self.lines[index if order is None else int(order[index])]

    def _read(self, entry):
        path = os.path.join(self.root, entry[0]) if self.root else entry[0]
        try:
            return read_image(path, *self.new_size, self.is_color)
        except CaffeError as err:
            raise self.error(f"Could not load {entry[0]}: {err}") from None

    def load_batch(self, k):
        entries = [self._entry(k * self.batch_size + i) for i in range(self.batch_size)]
        images = [self._read(e) for e in entries]
        labels = np.array([e[1] for e in entries], np.float32)
        rng = self.batch_rng(k)
        if all(im.shape == images[0].shape for im in images):
            return self.transformer.transform(np.stack(images), rng), labels
        shapes = {self.transformer.output_shape(*im.shape) for im in images}
        if len(shapes) > 1:
            raise self.error("images in one batch differ in size; set new_height / "
                             "new_width or crop_size")
        out = np.empty((len(images),) + shapes.pop(), np.float32)
        for i, im in enumerate(images):
            self.transformer.transform(im[None], rng, out=out[i:i + 1])
        return out, labels

    def set_state(self, state):
        super().set_state(state)
        self._set_skip()
        self._orders = {}
