"""Key-value databases of Datums: LMDB (core) and LevelDB (the `leveldb` extra), Caffe's db.hpp.

LMDB refuses to open one environment twice in a process, yet a train and a test net often
read the same database: readers therefore share one read-only environment per path.
"""
import os
import shutil
import tempfile
from contextlib import contextmanager

import numpy as np

from ..errors import CaffeError
from ..threads import ForkSafeRLock
from . import bus_error, mapped_pages

_ENVS = {}
_ENVS_LOCK = ForkSafeRLock()
#: held around every call a reader makes into py-lmdb, and by a fork while it happens: no
#: thread is then inside py-lmdb, whose own per-environment lock a forked child would
#: otherwise inherit held by a thread it does not have. The child's close() of the inherited
#: environment (_close_inherited) then never returned: about one run in fifteen of
#: tests/test_threads.py's forked child, whose parent's prefetch thread was reading.
_CALLS = ForkSafeRLock()


def _hold_calls_for_fork():
    _CALLS.__enter__()


def _release_calls_after_fork():
    _CALLS.__exit__(None, None, None)   # the child's lock is a new one (ForkSafeRLock)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_calls_for_fork,
                        after_in_parent=_release_calls_after_fork)


def _lmdb():
    import lmdb
    return lmdb


def backend_name(backend):
    """DataParameter.DB enum value or name -> 'lmdb' | 'leveldb'."""
    if isinstance(backend, str):
        name = backend.lower()
    else:
        name = {0: "leveldb", 1: "lmdb"}.get(int(backend), str(backend))
    if name not in ("lmdb", "leveldb"):
        raise CaffeError(f"unknown database backend '{backend}' (lmdb or leveldb)")
    return name


def _shared_env(path):
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise CaffeError("not an LMDB database (a directory is expected)", path)
        from .datasets import build_hint      # datasets writes databases with this module
        raise CaffeError("no such LMDB database (a directory is expected)" + build_hint(path),
                         path)
    data_file = os.path.join(path, "data.mdb")
    if not os.path.isfile(data_file):
        raise CaffeError("not an LMDB database (no data.mdb)", path)
    # the inode tells a database rebuilt at the same path from the one already open; an
    # environment must not cross a fork (LMDB's rule), so a forked child opens its own
    key = (os.getpid(), os.path.realpath(path), os.stat(data_file).st_ino)
    with _ENVS_LOCK, _CALLS:
        env = _ENVS.get(key)
        if env is None:
            _close_inherited(key[1:])
            try:
                env = _lmdb().open(path, readonly=True, lock=False, readahead=False,
                                   max_readers=512, subdir=True)
            except _lmdb().Error as err:
                raise CaffeError(f"cannot open LMDB: {err}", path) from None
            try:
                _check_covered(env, data_file, path)
            except CaffeError:
                env.close()
                raise
            _ENVS[key] = env
            bus_error.watch(path)
        return env


def _check_covered(env, data_file, path):
    """A data.mdb shorter than the pages its environment uses is truncated: reading it would
    kill the process with SIGBUS (the pages are memory-mapped), so it is refused here."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(data_file)
    if size < need:
        raise CaffeError(f"damaged LMDB database: data.mdb has {size} bytes, its pages need "
                         f"{need} (truncated?)", path)


def _close_inherited(where):
    """Close this database's environment inherited from a parent process: py-lmdb opens a
    path once per process, and the child's copy of the parent's mapping is its own to drop
    (read-only and lock-free, so the parent is not touched)."""
    for key in [k for k in _ENVS if k[1:] == where and k[0] != os.getpid()]:
        _ENVS.pop(key).close()


class _KeyTable:
    """Every key of a database in key order, packed into one bytes object with offsets (a
    million keys take their own bytes plus 8 each, not a Python object each): the random
    access by record index that shuffled reading needs, where seek walks from the start."""

    def __init__(self, keys):
        keys = list(keys)
        self._blob = b"".join(keys)
        self._ends = np.cumsum([len(k) for k in keys], dtype=np.int64)

    def __getitem__(self, index):
        end = int(self._ends[index])
        start = int(self._ends[index - 1]) if index else 0
        return self._blob[start:end]


class LMDBReader:
    """Sequential reader that wraps around at the end, as Caffe's DataReader does. In a
    forked child it reopens the database and goes on from the same record. Every
    RELEASE_BYTES of values read, the pages read so far leave the process's resident memory
    (mapped_pages.py): a long run does not end up holding the whole database."""

    RELEASE_BYTES = 4 << 20

    def __init__(self, path):
        self.path = path = os.fspath(path)
        self._unreleased = 0
        self.env = _shared_env(path)
        with _CALLS:
            self.count = self.env.stat()["entries"]
        if self.count == 0:
            raise CaffeError("the database is empty", path)
        self._txn = None
        self._cursor = None
        self._index = 0
        self._pid = os.getpid()
        self._keys = None

    def _open_cursor(self):
        # the transaction is created in the thread that reads (lock=False allows any thread)
        self._txn = self.env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._cursor.first()

    def _follow_fork(self):
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.env = _shared_env(self.path)
        self._txn = self._cursor = None       # the parent's: left alone, never aborted here
        self.seek(self._index)

    def seek(self, index):
        """Position at record `index` (mod count)."""
        with self._reading():
            self._open_cursor()
            self._index = index % self.count
            for _ in range(self._index):
                self._cursor.next()

    def next_value(self):
        self._follow_fork()
        with self._reading():
            if self._cursor is None:
                self._open_cursor()
            value = self._cursor.value()
            self._index = (self._index + 1) % self.count
            if not self._cursor.next():
                self._cursor.first()
        self._count_read(len(value))
        return value

    def _count_read(self, size):
        self._unreleased += size
        if self._unreleased >= self.RELEASE_BYTES:
            self._unreleased = 0
            mapped_pages.release(os.path.join(self.path, "data.mdb"))

    def values_at(self, indices):
        """The values of the records at positions `indices` (key order, each < count)."""
        self._follow_fork()
        with self._reading():
            if self._keys is None:
                with self.env.begin() as txn:
                    self._keys = _KeyTable(txn.cursor().iternext(keys=True, values=False))
            with self.env.begin(buffers=False) as txn:
                values = [txn.get(self._keys[int(i)]) for i in indices]
        self._count_read(sum(len(v) for v in values if v is not None))
        return values

    def close(self):
        if self._txn is not None:
            with _CALLS:
                self._txn.abort()
            self._txn = self._cursor = None

    def items(self):
        # a generator: it may be left unfinished, so it must not hold _CALLS between values
        with self._reading(guard=False), self.env.begin() as txn:
            yield from txn.cursor()

    @contextmanager
    def _reading(self, guard=True):
        """LMDB's own errors (overwritten pages: CorruptedError, a bad page: PageNotFound) as
        one error naming the database; with guard, no fork happens meanwhile (_CALLS)."""
        try:
            if guard:
                with _CALLS:
                    yield
            else:
                yield
        except _lmdb().Error as err:
            raise CaffeError(f"damaged LMDB database: {err}", self.path) from None


class LevelDBReader:
    def __init__(self, path):
        try:
            import plyvel
        except ImportError:
            raise CaffeError("LevelDB needs the leveldb extra: pip install 'caffe-lite[leveldb]'") from None
        self.path = path = os.fspath(path)
        if not os.path.isdir(path):
            raise CaffeError("no such LevelDB database", path)
        self.db = plyvel.DB(path, create_if_missing=False)
        self.count = sum(1 for _ in self.db.iterator(include_value=False))
        if self.count == 0:
            raise CaffeError("the database is empty", path)
        self._it = None
        self._keys = None

    def seek(self, index):
        self._it = self.db.iterator(include_key=False)
        for _ in range(index % self.count):
            next(self._it)

    def next_value(self):
        if self._it is None:
            self._it = self.db.iterator(include_key=False)
        try:
            return next(self._it)
        except StopIteration:
            self._it = self.db.iterator(include_key=False)
            return next(self._it)

    def values_at(self, indices):
        """The values of the records at positions `indices` (key order, each < count)."""
        if self._keys is None:
            self._keys = _KeyTable(self.db.iterator(include_value=False))
        return [self.db.get(self._keys[int(i)]) for i in indices]

    def close(self):
        self._it = None

    def items(self):
        yield from self.db.iterator()


def open_reader(path, backend="lmdb"):
    return LMDBReader(path) if backend_name(backend) == "lmdb" else LevelDBReader(path)


class DBWriter:
    """Writes a new database into a temporary directory and renames it into place on close,
    so a failed conversion leaves nothing behind and never touches an existing database."""

    def __init__(self, path, backend="lmdb", commit_every=1000):
        self.path = os.path.abspath(path)
        self.backend = backend_name(backend)
        if os.path.exists(self.path):
            raise CaffeError(f"{path}: already exists; remove it first (nothing was overwritten)")
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(self.path), dir=parent)
        self.commit_every = commit_every
        self.count = 0
        self.pending = []
        if self.backend == "lmdb":
            self.map_size = 1 << 30
            self.env = _lmdb().open(self.tmp, map_size=self.map_size, subdir=True)
        else:
            try:
                import plyvel
            except ImportError:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise CaffeError("LevelDB needs the leveldb extra: pip install 'caffe-lite[leveldb]'") from None
            self.db = plyvel.DB(self.tmp, create_if_missing=True, error_if_exists=False)

    def put(self, key, value):
        key = key.encode() if isinstance(key, str) else key
        self.pending.append((key, value))
        self.count += 1
        if len(self.pending) >= self.commit_every:
            self._commit()

    def _commit(self):
        if self.backend == "lmdb":
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        for key, value in self.pending:
                            txn.put(key, value)
                    break
                except _lmdb().MapFullError:
                    # the transaction was aborted: grow the map and write the batch again
                    self.map_size *= 2
                    self.env.set_mapsize(self.map_size)
        else:
            with self.db.write_batch() as batch:
                for key, value in self.pending:
                    batch.put(key, value)
        self.pending = []

    def close(self):
        self._commit()
        if self.backend == "lmdb":
            self.env.close()
        else:
            self.db.close()
        # mkdtemp made the directory private (0700); readable by all, like a new directory
        os.chmod(self.tmp, 0o755)
        os.replace(self.tmp, self.path)

    def abort(self):
        try:
            if self.backend == "lmdb":
                self.env.close()
            else:
                self.db.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
