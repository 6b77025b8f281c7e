"""Data: batches of Datums from an LMDB (or LevelDB) database, Caffe's DataLayer.

data_param: source, batch_size, backend (LEVELDB default, as Caffe; LMDB), rand_skip (skip
a random count < rand_skip at the start), prefetch (queue depth, default 4). Reading wraps
around at the end of the database. Tops: data (N, C, h, w) transformed by transform_param,
and optionally label (N,).

Record order. Item i of batch k is stream position g = skip + k * batch_size + i; batch k is
a function of (layer seed, k) alone, so prefetching and get_state / set_state resume exactly.
  * in order (BVLC): record g % count.
  * shuffle: true (NVCaffe 0.16/0.17, caffe-jacinto 0.16/0.17), TRAIN only: record
    order_e[g % count] of epoch e = g // count, order_e a seeded permutation drawn anew for
    each epoch. NVCaffe shuffles only with `cache: true`, reads its first epoch in database
    order while filling the cache and permutes the cache before each later epoch; here every
    epoch is permuted, cache or not (what `shuffle` asks for; cache is inert here). TEST
    nets read in order, as NVCaffe's.
  * shuffle: true with shuffle_skip_max set (caffe-jacinto 0.15, default 1000; only a file
    that sets it gets this meaning, since the field exists in no later schema): a random
    walk, as 0.15's DataReader::read_one, in every phase. After each record the reader moves
    forward by a count drawn uniformly from [0, shuffle_skip_max) (0 reads the same record
    again) and goes back to the first record when it passes the end; the walk starts at the
    rand_skip offset. The walk's position at the next batch is part of get_state.
The draws come from the layer seed (so from the solver's random_seed), not from the fork's
generator: the orders are random in the fork's way, not the fork's own sequence.

A reader with a share of the stream (base_data.py: set_share, one rank of a data-parallel
run) reads batches k = rank, rank + count, ...: the same records as above for those k. In
order it looks them up by key (the cursor would walk over the other readers' records); on
the walk it still draws the steps of the batches it skips, to know where its own start.
"""
import numpy as np

from ..common import TRAIN
from ..data.datum import datum_from_bytes, datum_to_array, raw_datum_shape
from ..data.db import open_reader
from ..errors import CaffeError
from . import register
from .base_data import PrefetchingDataLayer, source_error

# generator streams under the layer seed: [seed, k] are batch k's transforms
_RAND_SKIP, _EPOCH_ORDER, _WALK = 2, 3, 4


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
        self.order = _record_order(p, self.phase)
        if self.order == "walk" and p.shuffle_skip_max <= 0:
            raise self.error(f"data_param.shuffle_skip_max must be positive, not "
                             f"{p.shuffle_skip_max}")
        self.skip_max = int(p.shuffle_skip_max)
        self._set_skip()
        self._next_record = None
        first, _ = self._decode([self._peek()], [self.skip % self.reader.count])
        item_shape = self.transformer.output_shape(*first.shape[1:])
        top[0].reshape((self.batch_size,) + item_shape)
        if self.output_labels:
            top[1].reshape((self.batch_size,))

    def _set_skip(self):
        # drawn from the layer seed, so the state (seed, batch_index) fixes it on resume
        self.skip = (int(np.random.default_rng([self.seed, _RAND_SKIP]).integers(
            0, self.rand_skip)) if self.rand_skip else 0)
        self._epoch_orders = {}
        # the walk's record at the start of each batch still to be read or resumed from
        self._walk_starts = {0: self.skip % self.reader.count}

    def get_state(self):
        state = super().get_state()
        if self.order == "walk":
            # known: _walk fills in the starts up to this reader's next batch
            state["walk_position"] = self._walk_starts[self.batch_index]
        return state

    def set_state(self, state):
        super().set_state(state)
        self._set_skip()
        if self.order == "walk":
            if "walk_position" not in state:
                raise self.error("the resume state has no walk_position (saved before "
                                 "data_param.shuffle_skip_max was set?)")
            self._walk_starts = {self.batch_index: int(state["walk_position"])}

    def _peek(self):
        self.reader.seek(self.skip)
        value = self.reader.next_value()
        self._next_record = None
        return value

    def _decode(self, values, records):
        """(images, labels) of the records' values; a bad record is one error naming the
        database and the record's position in key order."""
        t = self.transformer
        datums = [self._checked(datum_from_bytes, v, r) for v, r in zip(values, records)]
        labels = np.array([d.label for d in datums], np.float32)
        first = datums[0]
        if not first.encoded and first.data:
            shape = self._checked(raw_datum_shape, first, records[0])
            if all(d.data and not d.encoded and d.channels == first.channels
                   and d.height == first.height and d.width == first.width
                   and len(d.data) == len(first.data) for d in datums):
                # raw uint8 datums: one join and one view, no per-image arrays
                flat = np.frombuffer(b"".join(d.data for d in datums), np.uint8)
                return flat.reshape((len(datums),) + shape), labels
        arrays = [self._checked(datum_to_array, d, r, t.force_color, t.force_gray)
                  for d, r in zip(datums, records)]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise self.error("images in one batch differ in shape; resize them when "
                             "building the database (convert_imageset -resize_height/-width)")
        return np.stack(arrays), labels

    def _checked(self, fn, value, record, *args):
        try:
            return fn(value, *args)
        except CaffeError as err:
            raise self.error(f"data_param.source '{self.param.data_param.source}', record "
                             f"#{record} (in key order): {err}") from None

    def load_batch(self, k):
        if self.order == "in order":
            start = (self.skip + k * self.batch_size) % self.reader.count
            records = [(start + i) % self.reader.count for i in range(self.batch_size)]
            values = (self._values_in_order(k) if self.share[1] == 1
                      else self.reader.values_at(records))
        else:
            records = self._shuffled(k) if self.order == "shuffle" else self._walk(k)
            values = self.reader.values_at(records)
        images, labels = self._decode(values, list(records))
        return self.transformer.transform(images, self.batch_rng(k)), labels

    def _values_in_order(self, k):
        start = (self.skip + k * self.batch_size) % self.reader.count
        if self._next_record != start:
            self.reader.seek(start)
        values = [self.reader.next_value() for _ in range(self.batch_size)]
        self._next_record = (start + self.batch_size) % self.reader.count
        return values

    def _shuffled(self, k):
        """Records of batch k: each epoch's permutation, drawn from (seed, epoch)."""
        first = self.skip + k * self.batch_size
        epochs, index = np.divmod(np.arange(first, first + self.batch_size), self.reader.count)
        records = np.empty_like(index)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            records[here] = self._epoch_order(int(epoch))[index[here]]
        return records

    def _epoch_order(self, epoch):
        order = self._epoch_orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, _EPOCH_ORDER, epoch]).permutation(
                self.reader.count)
            # keep the previous epoch too: a batch may straddle the two
            self._epoch_orders = {e: o for e, o in self._epoch_orders.items()
                                  if e == epoch - 1}
            self._epoch_orders[epoch] = order
        return order

    def _walk(self, k):
        """Records of batch k on caffe-jacinto 0.15's random walk, from where batch k - 1
        left it; also notes where the batches up to this reader's next one start."""
        records, _ = self._walk_batch(k)
        stride = self.share[1]
        for j in range(k + 1, k + stride):
            self._walk_batch(j)
        # the consumer is at most the queue depth (plus the batch in hand) behind k
        oldest = k - (self.prefetcher.depth + 2) * stride
        for j in [j for j in self._walk_starts if j < oldest]:
            del self._walk_starts[j]
        return records

    def _walk_batch(self, k):
        """(records of batch k, where batch k + 1 starts), noting the latter."""
        steps = np.random.default_rng([self.seed, _WALK, k]).integers(
            0, self.skip_max, self.batch_size)
        position, count = self._walk_start(k), self.reader.count
        records = []
        for step in steps.tolist():
            records.append(position)
            position += step
            if position >= count:
                position = 0
        self._walk_starts[k + 1] = position
        return records, position

    def _walk_start(self, k):
        """Where batch k starts: noted, or walked to from the last noted start before it
        (a reader's first batch after a resume, when its share starts past the round's)."""
        if k not in self._walk_starts:
            for j in range(max(j for j in self._walk_starts if j < k), k):
                self._walk_batch(j)
        return self._walk_starts[k]


def _record_order(p, phase):
    """'in order', 'shuffle' (a permutation per epoch) or 'walk' (0.15's random skips)."""
    if not p.shuffle:
        return "in order"
    if p.HasField("shuffle_skip_max"):
        return "walk"
    return "shuffle" if phase == TRAIN else "in order"
