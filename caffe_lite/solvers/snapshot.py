"""Snapshot and Restore: Caffe's Solver::Snapshot and SGDSolver::{Snapshot,Restore}SolverState.

Files for iteration N, `snapshot_format: BINARYPROTO` (default) / `HDF5`:
  <prefix>_iter_N.caffemodel        / .caffemodel.h5     the train net (diffs with snapshot_diff)
  <prefix>_iter_N.solverstate       / .solverstate.h5    SolverState: iter, learned_net (the
                                                         model file), history, current_step
  <state file>.rng.json                                  caffe-lite only: RNG and data cursors

Real Caffe reads and writes the first two unchanged. The side file holds what exact resume
needs beyond SolverState: the global RNG state (caffe_lite.common) and the state of every
layer that has `get_state()` / `set_state()` (data layers: their seed and batch cursor), for
the train net and each test net, and the state of every solver hook with a `state_key`
(solvers/hooks.py: sparsity schedules, quantization ranges). Restore uses it when present
and matching the iteration. A hook's after_snapshot runs once the caffemodel is written.

Every file is written to a temp file beside it and renamed into place (caffe_lite.io.atomic):
a kill during a snapshot leaves the previous files whole. The side file is written first and
the solverstate last, so a complete .solverstate always has its model and side file.
"""
import json
import os

import numpy as np

from .. import common
from ..errors import CaffeError
from ..io.atomic import atomic_write
from ..io.input_file import file_problem
from ..log import LOG
from ..proto import caffe_pb2

RNG_SUFFIX = ".rng.json"
RESUME_FORMAT = 1


def _is_hdf5(param):
    return param.snapshot_format == caffe_pb2.SolverParameter.HDF5


def snapshot(solver):
    """Write the model, side file and solver state for solver.iter; returns the state path."""
    p = solver.param
    hdf5 = _is_hdf5(p)
    if hdf5:
        model_path = solver.snapshot_filename(".caffemodel.h5")
        state_path = solver.snapshot_filename(".solverstate.h5")
    else:
        model_path = solver.snapshot_filename(".caffemodel")
        state_path = solver.snapshot_filename(".solverstate")
    write_resume_file(solver, state_path + RNG_SUFFIX)
    if hdf5:
        LOG.info("Snapshotting to HDF5 file %s", model_path)
        solver.net.save_hdf5(model_path, write_diff=p.snapshot_diff)
    else:
        LOG.info("Snapshotting to binary proto file %s", model_path)
        atomic_write(model_path, _net_bytes(solver.net, p.snapshot_diff))
    for hook in solver.hooks:
        after = getattr(hook, "after_snapshot", None)
        if after is not None:
            after(solver.net, model_path, solver.iter)
    state = solver.snapshot_state()
    state.learned_net = model_path
    if hdf5:
        LOG.info("Snapshotting solver state to HDF5 file %s", state_path)
        write_state_hdf5(state_path, state)
    else:
        LOG.info("Snapshotting solver state to binary proto file %s", state_path)
        atomic_write(state_path, state.SerializeToString())
    return state_path


def _net_bytes(net, write_diff):
    return net.to_proto(write_diff=write_diff).SerializeToString()


def write_state_hdf5(path, state):
    from ..io.blobs import blob_proto_to_array
    from ..io.hdf5 import write_solver_state_hdf5
    write_solver_state_hdf5(path, state.iter, state.learned_net, state.current_step,
                            [blob_proto_to_array(bp) for bp in state.history])


# --- the caffe-lite side file ---------------------------------------------------------------

def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _layer_states(net):
    states = {}
    for name, layer in zip(net.layer_names, net.layers):
        get = getattr(layer, "get_state", None)
        if callable(get):
            states[name] = get()
    return states


def _set_layer_states(net, states, label):
    layers = dict(zip(net.layer_names, net.layers))
    for name, state in _members(states, dict, label).items():
        layer = layers.get(name)
        if layer is None or not callable(getattr(layer, "set_state", None)):
            LOG.warning("Resume file: %s has no stateful layer '%s'; skipped", label, name)
            continue
        _step(f"{label}, layer '{name}'", layer.set_state, state)


def resume_state(solver):
    return {
        "caffe_lite_resume": RESUME_FORMAT,
        "iter": solver.iter,
        "rng": common.get_rng_state(),
        "train_net": _layer_states(solver.net),
        "test_nets": [_layer_states(net) for net in solver.test_nets],
        "hooks": _hook_states(solver),
    }


def _hook_states(solver):
    states = {}
    for hook in solver.hooks:
        key = getattr(hook, "state_key", None)
        if key is not None:
            states[key] = hook.get_state()
    return states


def _set_hook_states(solver, states):
    hooks = {getattr(h, "state_key", None): h for h in solver.hooks}
    for key, state in _members(states, dict, "hooks").items():
        hook = hooks.get(key)
        if hook is None:
            LOG.warning("Resume file: the solver has no hook '%s' (a field of the snapshot's "
                        "solver is gone?); its state is not restored", key)
            continue
        _step(f"hook '{key}'", hook.set_state, state)


class _Damaged(Exception):
    """A member of a resume file that cannot be applied; `args[0]` names it."""


def _members(value, kind, label):
    if not isinstance(value, kind):
        raise _Damaged(f"{label} is a {type(value).__name__}, not a "
                       f"{'list' if kind is list else 'mapping'}")
    return value


def _step(label, apply, state):
    try:
        apply(state)
    except Exception as err:       # whatever the member holds: it is refused, never half-set
        raise _Damaged(f"{label}: {err}") from None


def write_resume_file(solver, path):
    text = json.dumps(resume_state(solver), default=_json_default, sort_keys=True)
    atomic_write(path, text.encode("utf-8"))


def apply_resume_file(solver, path):
    """Restore the RNG, the data layers' cursors and the hooks' state from the side file of a
    snapshot: all of it, or (a damaged file) none of it and one error line naming the file
    and the member. A file of another iteration is ignored with a warning."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise CaffeError(f"cannot read the resume file ({err}); move it away to resume "
                         f"without the RNG and data cursors", path) from None
    if not isinstance(data, dict) or isinstance(data.get("iter"), bool) or not isinstance(
            data.get("iter"), int):
        raise CaffeError("not a resume file (an object with an integer 'iter' expected)",
                         path)
    if data["iter"] != solver.iter:
        LOG.warning("Resume file %s is for iteration %s, the solver state for %d; ignored",
                    path, data["iter"], solver.iter)
        return False
    before = resume_state(solver)
    try:
        _apply_resume_state(solver, data)
    except _Damaged as err:
        _apply_resume_state(solver, before)
        raise CaffeError(f"damaged resume file: {err.args[0]}; nothing of it was restored",
                         path) from None
    LOG.info("Restored RNG and data layer state from %s", path)
    return True


def apply_resume_state(solver, data):
    """Set what resume_state(solver) returned (for another solver of the same files: the
    ranks of a data-parallel run take rank 0's); a member that does not apply raises."""
    try:
        _apply_resume_state(solver, data)
    except _Damaged as err:
        raise CaffeError(f"cannot apply the resume state: {err.args[0]}") from None


def _apply_resume_state(solver, data):
    _step("rng", common.set_rng_state, data.get("rng"))
    _set_layer_states(solver.net, data.get("train_net", {}), "the train net")
    test_nets = _members(data.get("test_nets", []), list, "test_nets")
    for i, (net, states) in enumerate(zip(solver.test_nets, test_nets)):
        _set_layer_states(net, states, f"test net #{i}")
    _set_hook_states(solver, data.get("hooks", {}))


# --- Restore --------------------------------------------------------------------------------

def read_state(path):
    """A .solverstate or .solverstate.h5 as a SolverState message."""
    from ..io.binary import read_solver_state
    return read_solver_state(os.fspath(path))


def _resolve_learned_net(learned_net, state_path):
    # Caffe opens learned_net relative to the working directory; a snapshot moved with its
    # model (or read from another directory) is found beside the state file instead.
    if os.path.exists(learned_net) or os.path.isabs(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)),
                          os.path.basename(learned_net))
    return beside if os.path.exists(beside) else learned_net


def restore(solver, path):
    path = os.fspath(path)
    problem = file_problem(path)
    if problem:
        raise CaffeError(f"cannot open solver state ({problem})", path)
    state = read_state(path)
    history = solver.history
    if len(state.history) != len(history):
        raise CaffeError(f"Incorrect length of history blobs: the file has "
                         f"{len(state.history)}, a {solver.type} solver for this net needs "
                         f"{len(history)}", path)
    from ..io.blobs import blob_proto_to_array
    arrays = []
    for i, (bp, h) in enumerate(zip(state.history, history)):
        try:
            arr = blob_proto_to_array(bp)
        except CaffeError as err:
            raise CaffeError(f"history blob {i}: {err}", path) from None
        if arr.size != h.size:
            raise CaffeError(f"history blob {i} has {arr.size} values ({tuple(arr.shape)}), "
                             f"the param has {h.size} ({tuple(h.shape)})", path)
        arrays.append(arr)
    solver.iter = int(state.iter)
    if state.HasField("learned_net") and state.learned_net:
        model = _resolve_learned_net(state.learned_net, path)
        problem = file_problem(model)
        if problem:
            raise CaffeError(f"learned_net '{state.learned_net}': {problem}", path)
        solver.net.copy_from(model)
    solver.current_step = int(state.current_step)
    LOG.info("SGDSolver: restoring history")
    for arr, h in zip(arrays, history):
        h[...] = arr.reshape(h.shape)
    side = path + RNG_SUFFIX
    if os.path.isfile(side):
        apply_resume_file(solver, side)
