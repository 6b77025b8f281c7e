"""Prefetching data layers (Caffe's BasePrefetchingDataLayer): batches come from a background
thread; batch k is reproducible from k, so `get_state` / `set_state` give exact resume.

Shares: `set_share(rank, count)` makes the layer one of `count` readers that take the
batches of one stream in turn, as Caffe's multi-GPU DataReader hands them out: reader r gets
batches r, r + count, r + 2 count, ... (its random transforms are drawn from the stream
position too, so they differ per reader). `batch_index` stays the stream position of the
next round, the same on every reader, so a state saved by one reader resumes any count."""
import os
from abc import abstractmethod

import numpy as np

from ..common import rng
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer
from .base import Layer


def source_error(layer, field, path, err):
    """`err`, raised opening the file or database that `field` names, as the layer's error:
    `layer 'x' (T): data_param.source 'db': no such LMDB database`. An error at a line inside
    the file (a list file's entry) keeps its own file:line instead."""
    if err.path is None or err.line is not None or os.fspath(err.path) != os.fspath(path):
        return err
    return layer.error(f"{field} '{path}': {err.bare_message}")


class PrefetchingDataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        self.transformer = DataTransformer(self.param.transform_param, self.phase)
        # one seed per layer from the global RNG, so set_random_seed fixes every batch
        self.seed = int(rng().integers(0, 2**63 - 1))
        self.batch_index = 0
        self.share = (0, 1)
        self.output_labels = len(top) > 1
        self.prefetcher = Prefetcher(self.load_batch, self.prefetch_depth(), name=self.name)
        self.data_setup(bottom, top)

    def prefetch_depth(self):
        return 4

    def data_setup(self, bottom, top):
        """Open the source and shape the tops."""

    @abstractmethod
    def load_batch(self, k):
        """Batch k as (data float32 (N, C, H, W), labels float32 (N,)); runs in the thread."""

    def batch_rng(self, k):
        return np.random.default_rng([self.seed, k])

    def reshape(self, bottom, top):
        """Tops are shaped by each batch in forward."""

    def set_share(self, rank, count):
        """Read only this reader's share of the stream (module docstring)."""
        if not 0 <= rank < count:
            raise ValueError(f"reader {rank} of {count} does not exist")
        self.prefetcher.stop()
        self.share = (int(rank), int(count))

    def forward_cpu(self, bottom, top):
        rank, count = self.share
        if not self.prefetcher.running:
            self.prefetcher.start(self.batch_index + rank, count)
        k, (data, labels) = self.prefetcher.get()
        self.batch_index = k - rank + count
        top[0].reshape(data.shape)
        top[0].data[...] = data
        if self.output_labels:
            top[1].reshape(labels.shape)
            top[1].data[...] = labels

    def get_state(self):
        return {"seed": self.seed, "batch_index": self.batch_index}

    def set_state(self, state):
        seed = resume_count(state, "seed", 2 ** 64)
        batch_index = resume_count(state, "batch_index", None)
        self.prefetcher.stop()
        self.seed, self.batch_index = seed, batch_index

    def __del__(self):
        prefetcher = getattr(self, "prefetcher", None)
        if prefetcher is not None:
            prefetcher.stop()


def resume_count(state, key, limit):
    """state[key] as an int in [0, limit) (no limit: None), or a ValueError naming the key."""
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
            limit is not None and value >= limit):
        raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
    return value
