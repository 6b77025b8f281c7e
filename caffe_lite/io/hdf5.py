"""Caffe's HDF5 snapshot layout (snapshot_format: HDF5), through h5py (the `hdf5` extra).

caffemodel.h5, as Net::ToHDF5 writes it:
    /data/<layer name>/<i>   float32 dataset per parameter blob i (every layer gets a group;
                             a weight-shared blob is written only by its owner)
    /diff/<layer name>/<i>   the same for the diffs, with snapshot_diff
solverstate.h5, as SGDSolver::SnapshotSolverStateToHDF5 writes it:
    /iter                    scalar int32
    /learned_net             scalar fixed-length string (the .caffemodel.h5 path)
    /current_step            scalar int32
    /history/<i>             float32 dataset per history blob
Caffe reads groups by name, so the order of layers in the file does not matter.
"""
import os

import numpy as np

from ..errors import CaffeError
from .input_file import file_problem
from .atomic import atomic_path
from .blobs import array_to_blob_proto


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CaffeError("HDF5 needs the hdf5 extra: pip install caffe-lite[hdf5]") from None
    return h5py


def _pb2():
    from ..proto import caffe_pb2
    return caffe_pb2


def _open_read(path):
    h5py = _h5py()
    path = os.fspath(path)
    problem = file_problem(path)
    if problem == "is a directory":
        raise CaffeError("is a directory, not an HDF5 file", path)
    if problem:
        raise CaffeError(problem, path)
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CaffeError("not a valid HDF5 file (truncated or corrupt)", path) from None


# ---------------------------------------------------------------------------------------------
# caffemodel.h5

def write_net_hdf5(path, layers, diffs=None):
    """Write `layers` = [(layer name, [array or None, ...])] as Caffe's caffemodel.h5.

    None marks a weight-shared blob that its layer does not own (Caffe skips it in /data).
    `diffs` in the same form (or a dict name -> list) adds the /diff group.
    """
    h5py = _h5py()
    if diffs is not None and not isinstance(diffs, dict):
        diffs = dict(diffs)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            diff = f.create_group("diff") if diffs is not None else None
            for name, arrays in layers:
                group = data.create_group(name)
                for i, arr in enumerate(arrays):
                    if arr is not None:
                        _save_nd(group, str(i), arr)
                if diff is not None:
                    dgroup = diff.create_group(name)
                    for i, arr in enumerate(diffs.get(name, [])):
                        if arr is not None:
                            _save_nd(dgroup, str(i), arr)


def read_net_hdf5(path, group="data"):
    """[(layer name, [float32 array or None, ...])] from a caffemodel.h5 (`group` "data" or
    "diff"). None fills the index of a blob the file does not hold (weight sharing)."""
    with _open_read(path) as f:
        if group not in f or not isinstance(f[group], _h5py().Group):
            raise CaffeError(f"HDF5 file has no '/{group}' group (not a Caffe .caffemodel.h5)",
                             path)
        out = []
        for name, layer in f[group].items():
            blobs = {}
            for key, ds in layer.items():
                if not key.isdigit():
                    raise CaffeError(f"unexpected dataset '/{group}/{name}/{key}'", path)
                blobs[int(key)] = np.asarray(ds[()], dtype=np.float32)
            n = max(blobs) + 1 if blobs else 0
            out.append((name, [blobs.get(i) for i in range(n)]))
    return out


def read_net_hdf5_param(path):
    """A caffemodel.h5 as a NetParameter (layer name + blobs), like a binary caffemodel.

    An index the file does not hold (a weight-shared blob) becomes an empty BlobProto.
    """
    param = _pb2().NetParameter()
    for name, arrays in read_net_hdf5(path):
        layer = param.layer.add(name=name)
        for arr in arrays:
            bp = layer.blobs.add()
            if arr is not None:
                array_to_blob_proto(arr, out=bp)
    return param


# ---------------------------------------------------------------------------------------------
# solverstate.h5

def write_solver_state_hdf5(path, iter, learned_net, current_step, history):
    """Write a solverstate.h5 as SGDSolver::SnapshotSolverStateToHDF5 does."""
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.int32(iter))
            _save_string(f, "learned_net", learned_net)
            f.create_dataset("current_step", data=np.int32(current_step))
            group = f.create_group("history")
            for i, arr in enumerate(history):
                _save_nd(group, str(i), arr)


def read_solver_state_hdf5(path):
    """A solverstate.h5 as a SolverState message, so callers treat both formats alike."""
    state = _pb2().SolverState()
    with _open_read(path) as f:
        for key in ("iter", "current_step", "history"):
            if key not in f:
                raise CaffeError(f"HDF5 file has no '/{key}' (not a Caffe .solverstate.h5)",
                                 path)
        state.iter = int(f["iter"][()])
        state.current_step = int(f["current_step"][()])
        if "learned_net" in f:
            value = f["learned_net"][()]
            if isinstance(value, np.ndarray):
                value = value.item()
            if isinstance(value, bytes):
                value = value.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
            state.learned_net = value
        history = f["history"]
        n = len(history)
        for i in range(n):
            if str(i) not in history:
                raise CaffeError(f"HDF5 history has {n} blobs but no '/history/{i}'", path)
            array_to_blob_proto(np.asarray(history[str(i)][()], dtype=np.float32),
                                out=state.history.add())
    return state


# ---------------------------------------------------------------------------------------------

def _save_nd(group, name, arr):
    """hdf5_save_nd_dataset: a float32 dataset of the blob's shape."""
    group.create_dataset(name, data=np.ascontiguousarray(arr, dtype=np.float32))


def _save_string(f, name, text):
    """H5LTmake_dataset_string: a scalar C string, NUL-terminated, size strlen + 1."""
    h5py = _h5py()
    raw = text.encode("utf-8")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dset = h5py.h5d.create(f.id, name.encode(), tid, space)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\x00", dtype=f"S{len(raw) + 1}"),
               mtype=tid)
    dset.close()
