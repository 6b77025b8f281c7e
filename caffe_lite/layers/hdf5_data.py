"""HDF5Data: rows of HDF5 datasets, Caffe's HDF5DataLayer (through the `hdf5` extra, h5py).

hdf5_data_param: source (a text file listing .h5 files, whitespace separated), batch_size,
shuffle (false: file order and rows within a file are shuffled, files are not interleaved).
Each top reads the dataset of its own name; every dataset of a file must have the same
number of rows, and top i is (batch_size,) + that dataset's shape[1:]. As Caffe: a whole
file is loaded at once, rows are taken in order, the next file follows the last row, and the
list wraps around. No transform_param (the data is generic).

The position is one row counter; with shuffling, the file order of pass e and the row order
of the v-th file visit come from generators seeded by (seed, e) and (seed, v), so
get_state / set_state resume exactly.

`set_share(rank, count)` (one rank of a data-parallel run, as base_data.py's): the layer
reads batch `rank` of every round of `count` batches and passes over the others' rows; the
row counter stays the round's, the same on every reader.
"""
import os

import numpy as np

from ..common import rng
from ..errors import CaffeError
from ..log import LOG
from . import register
from .base import Layer
from .base_data import resume_count, source_error


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CaffeError("HDF5Data needs the hdf5 extra: pip install 'caffe-lite[hdf5]'") \
            from None
    return h5py


def read_source_list(source):
    try:
        with open(source, encoding="utf-8") as f:
            names = f.read().split()
    except (OSError, UnicodeDecodeError) as err:
        raise CaffeError(f"Failed to open source file: {getattr(err, 'strerror', err)}",
                         source) from None
    if not names:
        raise CaffeError("Must have at least 1 HDF5 filename listed", source)
    return names


@register("HDF5Data")
class HDF5DataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        if self.param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data (remove transform_param)")
        p = self.param.hdf5_data_param
        if p.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.h5py = _h5py()
        self.batch_size = int(p.batch_size)
        self.shuffle = bool(p.shuffle)
        self.names = list(self.param.top)
        try:
            self.files = read_source_list(p.source)
        except CaffeError as err:
            raise source_error(self, "hdf5_data_param.source", p.source, err) from None
        LOG.info("Number of HDF5 files: %d", len(self.files))
        self.seed = int(rng().integers(0, 2**63 - 1))
        self._rows = {}         # file index -> row count
        self._loaded = None     # (file index, its arrays, its row order or None)
        self.share = (0, 1)
        self.set_state({"seed": self.seed, "offset": 0})
        arrays = self._loaded[1]
        for t, a in zip(top, arrays):
            t.reshape((self.batch_size,) + a.shape[1:])

    # --- position ----------------------------------------------------------------------
    def _file_order(self, epoch):
        if not self.shuffle:
            return list(range(len(self.files)))
        return list(np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.files)))

    def _row_count(self, index):
        if index not in self._rows:
            path = self.files[index]
            with self._open(path) as f:
                shape = self._dataset(f, path, self.names[0]).shape
                self._rows[index] = shape[0] if shape else 0
        return self._rows[index]

    def get_state(self):
        return {"seed": self.seed, "offset": self.offset}

    def set_state(self, state):
        """Place the reader at row `offset` of the stream (counting every row served)."""
        self.seed = resume_count(state, "seed", 2 ** 64)
        self.offset = resume_count(state, "offset", None)
        per_pass = sum(self._row_count(i) for i in range(len(self.files)))
        if per_pass == 0:
            raise self.error("the HDF5 files hold no rows")
        epoch, rest = divmod(self.offset, per_pass)
        self.epoch, self.order, self.slot = epoch, self._file_order(epoch), 0
        while rest >= self._row_count(self.order[self.slot]):
            rest -= self._row_count(self.order[self.slot])
            self.slot += 1
        self.row = rest
        self._load()

    def _load(self):
        visit = self.epoch * len(self.files) + self.slot
        index = self.order[self.slot]
        if self._loaded is not None and self._loaded[0] == index:
            arrays = self._loaded[1]    # one file in the list: Caffe keeps it in memory
        else:
            arrays = self._read_file(index)
        rows = arrays[0].shape[0]
        perm = (np.random.default_rng([self.seed, 1, visit]).permutation(rows)
                if self.shuffle else None)
        self._loaded = (index, arrays, perm)

    def _read_file(self, index):
        path = self.files[index]
        with self._open(path) as f:
            arrays = [np.asarray(self._dataset(f, path, name), self.dtype)
                      for name in self.names]
        rows = arrays[0].shape[0] if arrays[0].ndim else 0
        for name, a in zip(self.names, arrays):
            if a.ndim < 1 or a.shape[0] != rows:
                raise self.error(f"{path}: dataset '{name}' has shape {a.shape}, "
                                 f"'{self.names[0]}' has {rows} rows (every top needs as "
                                 "many rows)")
        self._rows[index] = rows
        return arrays

    def _advance(self, n):
        self.offset += n
        self.row += n
        while self.row >= self._row_count(self.order[self.slot]):
            # next file (files without rows are passed over); wrap and reshuffle the files
            self.row = 0
            self.slot += 1
            if self.slot == len(self.files):
                self.slot = 0
                self.epoch += 1
                self.order = self._file_order(self.epoch)
            if self._row_count(self.order[self.slot]):
                self._load()

    def _open(self, path):
        # the list's paths are taken from the working directory, not from the list's folder
        listed = f"listed in hdf5_data_param.source '{self.param.hdf5_data_param.source}'"
        if not os.path.isfile(path):
            raise self.error(f"Failed opening HDF5 file: {path} ({listed})")
        try:
            return self.h5py.File(path, "r")
        except OSError as err:
            raise self.error(f"Failed opening HDF5 file: {path} ({listed}: {err})") from None

    def _dataset(self, f, path, name):
        if name not in f:
            raise self.error(f"{path}: Failed to find HDF5 dataset {name}")
        return f[name]

    # --- Caffe's contract --------------------------------------------------------------
    def reshape(self, bottom, top):
        """Tops keep the shapes set up from the first file."""

    def set_share(self, rank, count):
        if not 0 <= rank < count:
            raise ValueError(f"reader {rank} of {count} does not exist")
        self.share = (int(rank), int(count))

    def _pass_over(self, rows):
        if rows:
            self.set_state({"seed": self.seed, "offset": self.offset + rows})

    def forward_cpu(self, bottom, top):
        rank, count = self.share
        self._pass_over(rank * self.batch_size)
        self._read_batch(top)
        self._pass_over((count - 1 - rank) * self.batch_size)

    def _read_batch(self, top):
        i = 0
        while i < self.batch_size:
            index, arrays, perm = self._loaded
            n = min(self.batch_size - i, self._rows[index] - self.row)
            rows = (slice(self.row, self.row + n) if perm is None
                    else perm[self.row:self.row + n])
            for t, a in zip(top, arrays):
                if a.shape[1:] != t.shape[1:]:
                    raise self.error(f"{self.files[index]}: dataset shape {a.shape[1:]} "
                                     f"differs from the first file's {tuple(t.shape[1:])}")
                t.data[i:i + n] = a[rows]
            i += n
            self._advance(n)
