"""Solver: Caffe's Solver<Dtype> (solver.cpp), the training loop shared by every update rule.

Init builds the train net (exactly one of net / net_param / train_net / train_net_param, with
NetState phase TRAIN, merged with the net's own state, then `train_state`) and the test nets
(test_net_param, test_net, then `net`/`net_param` for the remaining `test_iter`s, phase TEST
plus `test_state`). `random_seed >= 0` seeds caffe_lite.common before the nets are built.

Step(n), per iteration:
  clear param diffs; test every `test_interval` (at 0 only with `test_initialization`);
  (once, before the first iteration: every hook's start());
  on_start hooks; loss = mean over `iter_size` forward_backward passes (diffs accumulate);
  smoothed loss over the last `average_loss` iterations; every `display` iterations log
  "Iteration N (X iter/s, Ys/D iters), loss = L" and each train output;
  every hook's gradients_ready, then on_gradients_ready callbacks; apply_update (the
  subclass's rule, then net.update()); after_update hooks; iter += 1; act on a signal
  request (snapshot / stop); snapshot every `snapshot` iterations.
solve(resume_file) runs Step(max_iter - iter), snapshots after training
(`snapshot_after_train`), then a last display/test pass, as Caffe does.

Extension points:
  * add_callback(on_start, on_gradients_ready, after_update): pycaffe's callables with no
    arguments, or one object with any of those methods (progress bars, user scripts);
  * hooks (solvers/hooks.py): small objects called per parameter with explicit arguments
    (the SolverParam record, the iteration) to add regularization terms, change an lr_mult,
    mask the update, or change the weights after it; made by registered factories from the
    solver's fields, or added with add_hook(hook); set_update_mask(param, mask) is one;
  * get_learning_rate(): override, or add a policy in lr_policy.py.
State blobs (BatchNorm statistics, DNS/INQ masks) keep their place in learnable_params and
in the .solverstate history, as in Caffe, but are never updated.
"""
import copy
import os
import time
from abc import ABC, abstractmethod

import numpy as np
from google.protobuf import text_format

from .. import common, compiler_pages
from ..errors import CaffeError
from ..io.input_file import file_problem
from ..kernels.gemm import blas_single_threaded
from ..log import LOG
from ..proto import caffe_pb2
from . import regularizers, snapshot as _snapshot
from .hooks import SolverParam, UpdateMask, hooks_for
from . import lr_policy
from .lr_policy import get_learning_rate
from .validate import FieldLines, Where, resolve_net_file, validate_solver_param

NONE, SNAPSHOT, STOP = "none", "snapshot", "stop"
ACTIONS = (NONE, SNAPSHOT, STOP)

# caffe-jacinto's lenient weight loading: the solver field of each vintage, and the layer
# types whose blob count may then differ from the caffemodel's (None: any layer).
_LENIENT_LOAD_FIELDS = (
    ("ignore_shape_mismatch", ("BatchNorm",)),  # 0.16 / 0.17
    ("ignore_mismatching_blobs", None),         # G1 / G2 (caffe-0.15, rc0.16.1)
)


def fmt(value):
    """A number as C++'s `ostream << float` prints it (6 significant digits)."""
    return "%g" % value


class _Callback:
    __slots__ = ("on_start", "on_gradients_ready", "after_update")

    def __init__(self, on_start=None, on_gradients_ready=None, after_update=None):
        self.on_start = on_start
        self.on_gradients_ready = on_gradients_ready
        self.after_update = after_update


class Solver(ABC):
    #: the `type` string this class registers under (set by @register_solver)
    type = None

    def __init__(self, param, path=None):
        if isinstance(param, (str, os.PathLike)):
            from ..io.prototxt import read_solver_param
            path = param
            param = read_solver_param(path)
        else:
            param = copy.deepcopy(param)
        self.param = param
        self.param_path = os.fspath(path) if path is not None else None
        self.where = Where(self.param_path, FieldLines(self.param_path))
        validate_solver_param(param, self.where, self.param_path)
        self.validate()
        self._check_snapshot_prefix()
        LOG.info("Initializing solver from parameters: \n%s",
                 text_format.MessageToString(param).rstrip("\n"))
        if param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
            common.set_device(param.device_id)
        if param.random_seed >= 0:
            common.set_random_seed(param.random_seed)

        self.callbacks = []
        self.hooks = hooks_for(param)
        self._hooks_started = False
        self._update_mask = None
        self._action_function = None
        self.requested_early_exit = False
        self.iter = 0
        self.current_step = 0
        self.losses = []
        self.smoothed_loss = 0.0
        self.learning_rate = 0.0
        self._iterations_last = 0
        self._timer = time.perf_counter()

        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        self.mean_scores = [[] for _ in self.test_nets]
        for i, weights in enumerate(self._weights_list()):
            self._load_weights(weights, "weights", i)
        LOG.info("Solver scaffolding done.")
        self.regularization_types = regularizers.resolve_types(
            param, self._param_specs(), self.where) if param.weight_decay else \
            [param.regularization_type] * len(self.net.learnable_params)
        self.pre_solve()
        self.params = self._solver_params()
        self._params_by_index = {param.index: param for param in self.params}

    # --- hooks a subclass fills in ----------------------------------------------------------
    def validate(self):
        """Rule-specific checks (Caffe's constructor sanity checks); raise self.where(...)."""

    def pre_solve(self):
        """Allocate the update rule's history."""
        self.history = []

    @abstractmethod
    def apply_update(self):
        """One update of every learnable parameter from its accumulated diff."""

    # --- nets -------------------------------------------------------------------------------
    def _read_net(self, path, field, index=0):
        """(NetParameter, (file, layer lines)) of a net file the solver names."""
        from ..io.prototxt import read_net_param
        resolved = resolve_net_file(path, self.param_path)
        problem = file_problem(resolved)
        if problem:
            raise self.where(field, f"cannot open {field} file '{path}' ({problem})", index)
        param, lines = read_net_param(resolved, with_lines=True)
        return param, (resolved, lines)

    def _make_net(self, net_param, phase, extra_state, source=None, forward_only=False):
        from ..net import Net
        state = caffe_pb2.NetState()
        state.phase = phase
        state.MergeFrom(net_param.state)
        if extra_state is not None:
            state.MergeFrom(extra_state)
        net_param.state.CopyFrom(state)
        return Net(None, phase=state.phase, param=net_param, source=source,
                   forward_only=forward_only)

    def _init_train_net(self):
        p = self.param
        source = None
        if p.HasField("train_net_param"):
            LOG.info("Creating training net specified in train_net_param.")
            net_param = copy.deepcopy(p.train_net_param)
        elif p.HasField("train_net"):
            LOG.info("Creating training net from train_net file: %s", p.train_net)
            net_param, source = self._read_net(p.train_net, "train_net")
        elif p.HasField("net_param"):
            LOG.info("Creating training net specified in net_param.")
            net_param = copy.deepcopy(p.net_param)
        else:
            LOG.info("Creating training net from net file: %s", p.net)
            net_param, source = self._read_net(p.net, "net")
        train_state = p.train_state if p.HasField("train_state") else None
        return self._make_net(net_param, common.TRAIN, train_state, source)

    def _init_test_nets(self):
        p = self.param
        sources = []
        for i, tp in enumerate(p.test_net_param):
            sources.append(("test_net_param", lambda tp=tp: (copy.deepcopy(tp), None)))
        for i, name in enumerate(p.test_net):
            sources.append((f"test_net file: {name}",
                            lambda name=name, i=i: self._read_net(name, "test_net", i)))
        remaining = len(p.test_iter) - len(sources)
        if p.HasField("net_param"):
            sources += [("net_param", lambda: (copy.deepcopy(p.net_param), None))] * remaining
        if p.HasField("net"):
            sources += [(f"net file: {p.net}", lambda: self._read_net(p.net, "net"))] * remaining
        nets = []
        for i, (source, load) in enumerate(sources):
            LOG.info("Creating test net (#%d) specified by %s", i, source)
            state = p.test_state[i] if len(p.test_state) else None
            net_param, where = load()
            # a test net only scores: its forward keeps nothing for a backward
            net = self._make_net(net_param, common.TEST, state, where, forward_only=True)
            net.debug_info = bool(p.debug_info)
            nets.append(net)
        return nets

    def _weights_list(self):
        return list(self.param.weights)

    def _solver_params(self):
        """A SolverParam record for every learnable param that updates (not state blobs)."""
        net = self.net
        count = len(net.learnable_params)
        out = []
        for i, (blob, (layer_id, blob_index)) in enumerate(
                zip(net.learnable_params, net.learnable_param_owners)):
            if net.learnable_is_state[i]:
                continue
            out.append(SolverParam(i, blob, net.param_specs[i], net.layers[layer_id].param,
                                   blob_index, self.history, count))
        return out

    def _load_weights(self, model_list, field=None, index=0):
        """Caffe's LoadNetWeights: comma-separated caffemodels into the train and test nets."""
        for name in str(model_list).split(","):
            name = name.strip()
            if not name:
                continue
            problem = file_problem(name)
            if problem:
                message = f"cannot open weights file '{name}' ({problem})"
                if field is None:
                    raise CaffeError(message)
                raise self.where(field, message, index)
            LOG.info("Finetuning from %s", name)
            options = self.weight_loading_options()
            for net in [self.net] + list(self.test_nets):
                net.copy_from(name, **options)

    def load_weights(self, model_list):
        """Finetune from comma-separated caffemodels (caffe train -weights)."""
        self._load_weights(model_list)

    def weight_loading_options(self):
        """Net.copy_from keywords for the `weights` field and -weights: caffe-jacinto's
        lenient load when the solver file asks for it.

        ignore_shape_mismatch (jacinto 0.16/0.17) tolerates a blob-count mismatch in
        BatchNorm layers only; ignore_mismatching_blobs (G1/G2, its older name) in any layer,
        as caffe-0.15's CopyTrainedLayersFrom does. Both copy the leading blobs both sides
        have, copy a blob whose shape differs when the element counts agree and skip it with
        a warning otherwise. A field counts only when the file sets it (HasField): the schema
        default of ignore_shape_mismatch is true, which would silently load mismatched
        weights into BVLC files. Where we differ from the forks: they are lenient also with
        no solver (caffe test, time: Net::solver_ is null), and caffe-0.15 accepts a
        blob-count mismatch even when its flag is false; HDF5 weights are strict in both.
        """
        for field, count_mismatch_types in _LENIENT_LOAD_FIELDS:
            if self.param.HasField(field):
                return {"ignore_shape_mismatch": getattr(self.param, field),
                        "count_mismatch_types": count_mismatch_types}
        return {}

    def _param_specs(self):
        specs = getattr(self.net, "param_specs", None)
        if specs is None:
            return [None] * len(self.net.learnable_params)
        return list(specs)

    def _check_snapshot_prefix(self):
        p = self.param
        if not p.snapshot:
            return
        folder = os.path.dirname(p.snapshot_prefix) or "."
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            from ..data.datasets import build_hint
            hint = "" if os.path.isdir(folder) else build_hint(p.snapshot_prefix)
            raise self.where("snapshot_prefix", f"Cannot write to snapshot prefix "
                             f"'{p.snapshot_prefix}'. Make sure that the directory exists "
                             f"and is writeable.{hint}")

    # --- pycaffe-style API ------------------------------------------------------------------
    def add_callback(self, on_start=None, on_gradients_ready=None, after_update=None):
        """pycaffe's add_callback(on_start, on_gradients_ready), plus after_update; or one
        object with any of those methods."""
        if (on_gradients_ready is None and after_update is None and on_start is not None
                and any(hasattr(on_start, m) for m in _Callback.__slots__)):
            obj = on_start
            cb = _Callback(getattr(obj, "on_start", None), getattr(obj, "on_gradients_ready", None),
                           getattr(obj, "after_update", None))
        else:
            cb = _Callback(on_start, on_gradients_ready, after_update)
        self.callbacks.append(cb)
        return cb

    def _run_callbacks(self, name):
        for cb in self.callbacks:
            fn = getattr(cb, name)
            if fn is not None:
                fn()

    def add_hook(self, hook):
        """Run `hook` (solvers/hooks.py) on every updated param from the next iteration."""
        self.hooks.append(hook)
        return hook

    def set_update_mask(self, param, mask, history=False):
        """Multiply learnable param `param`'s update (and with history=True its history) by
        `mask` each iteration, so entries where it is 0 never move. `mask=None` removes it.
        `param` is an index into net.learnable_params or the Blob."""
        pid = param if isinstance(param, (int, np.integer)) else self._param_index(param)
        if self._update_mask is None:
            self._update_mask = self.add_hook(UpdateMask())
        if mask is not None:
            blob = self.net.learnable_params[pid]
            mask = np.asarray(mask, dtype=blob.data.dtype)
            if mask.size != 1 and mask.shape != blob.shape:
                mask = mask.reshape(blob.shape)
        self._update_mask.set(pid, mask, history)

    def _param_index(self, blob):
        for i, b in enumerate(self.net.learnable_params):
            if b is blob:
                return i
        raise CaffeError("set_update_mask: the blob is not a learnable param of the train net")

    def set_action_function(self, fn):
        """fn() -> 'none' | 'snapshot' | 'stop', polled each iteration (Caffe's SignalHandler)."""
        self._action_function = fn

    def get_requested_action(self):
        if self._action_function is None:
            return NONE
        action = self._action_function()
        return action if action in ACTIONS else NONE

    def share_weights(self, net):
        net.share_trained_layers_with(self.net)

    def get_learning_rate(self):
        return get_learning_rate(self.param, self)

    @property
    def lr(self):
        return float(self.learning_rate)

    # --- the loop ---------------------------------------------------------------------------
    def step(self, iters):
        """Run `iters` iterations (Caffe's Solver::Step), the update included with OpenBLAS
        kept off its own threads (kernels/gemm.py: blas_single_threaded)."""
        if self.param.max_iter <= 0 and iters > 0:
            # the solver was checked for no iterations; pycaffe may step it anyway
            lr_policy.validate_lr_policy(self.param, self.where, iterations=iters)
        with blas_single_threaded():
            self._step(iters)

    def _step(self, iters):
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        self.losses = []
        self.smoothed_loss = 0.0
        self._timer = time.perf_counter()
        self._iterations_last = self.iter
        net = self.net
        self._start_hooks()
        while self.iter < stop_iter:
            net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self.requested_early_exit:
                    break
            self._run_callbacks("on_start")
            display = bool(p.display) and self.iter % p.display == 0
            net.debug_info = display and p.debug_info
            loss = np.float32(0)
            for _ in range(p.iter_size):
                loss += np.float32(net.forward_backward())
            loss = float(loss / np.float32(p.iter_size))
            self._update_smoothed_loss(loss, start_iter, average_loss)
            if display:
                self._display()
            self._gradients_ready()
            self._run_callbacks("on_gradients_ready")
            self.apply_update()
            if self.iter == start_iter:
                compiler_pages.release()       # the update's kernels are loaded now
            self._run_callbacks("after_update")
            self.iter += 1
            request = self.get_requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _start_hooks(self):
        """Each hook's start(), once, before the first iteration (after any restore)."""
        if self._hooks_started:
            return
        self._hooks_started = True
        nets = [self.net] + list(self.test_nets)
        for hook in self.hooks:
            start = getattr(hook, "start", None)
            if start is not None:
                start(self.params, self.iter, nets)

    def _gradients_ready(self):
        for hook in self.hooks:
            ready = getattr(hook, "gradients_ready", None)
            if ready is not None:
                ready(self.params, self.iter)

    def _display(self):
        now = time.perf_counter()
        lapse = now - self._timer
        per_s = (self.iter - self._iterations_last) / (lapse if lapse else 1)
        LOG.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, fmt(per_s),
                 fmt(lapse), self.param.display, fmt(self.smoothed_loss))
        self._timer = now
        self._iterations_last = self.iter
        index = 0
        for name, weight, values in _outputs(self.net):
            for v in values:
                LOG.info("    Train net output #%d: %s = %s%s", index, name, fmt(v),
                         _loss_note(weight, v))
                index += 1

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss += (loss - self.losses[idx]) / average_loss
            self.losses[idx] = loss

    def solve(self, resume_file=None):
        p = self.param
        LOG.info("Solving %s", self.net.name)
        LOG.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            LOG.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            LOG.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = float(self.net.forward_prefilled())
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            LOG.info("Iteration %d, loss = %s", self.iter, fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        LOG.info("Optimization Done.")

    def test_all(self):
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(test_net_id)

    def test(self, test_net_id=0):
        p = self.param
        LOG.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        test_net = self.test_nets[test_net_id]
        test_net.share_trained_layers_with(self.net)
        n_iter = p.test_iter[test_net_id]
        scores = None
        names = None
        loss = 0.0
        for _ in range(n_iter):
            request = self.get_requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self.get_requested_action()
            if self.requested_early_exit:
                break
            iter_loss = float(test_net.forward_prefilled())
            if p.test_compute_loss:
                loss += iter_loss
            outs = _outputs(test_net)
            flat = np.concatenate([np.asarray(v, np.float64).ravel() for _, _, v in outs]) \
                if outs else np.zeros(0)
            if scores is None:
                scores = flat.astype(np.float32)
                names = [(n, w) for n, w, v in outs for _ in range(len(v))]
            else:
                scores = (scores + flat.astype(np.float32)).astype(np.float32)
        if self.requested_early_exit:
            LOG.info("Test interrupted.")
            return
        if p.test_compute_loss and n_iter:
            LOG.info("Test loss: %s", fmt(loss / n_iter))
        mean_scores = []
        for i, (name, weight) in enumerate(names or []):
            mean = float(np.float32(scores[i] / np.float32(n_iter)))
            mean_scores.append(mean)
            LOG.info("    Test net output #%d: %s = %s%s", i, name, fmt(mean),
                     _loss_note(weight, mean))
        self.mean_scores[test_net_id] = mean_scores

    # --- snapshots --------------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write <prefix>_iter_N.caffemodel(.h5) and .solverstate(.h5) (atomically)."""
        return _snapshot.snapshot(self)

    def restore(self, state_file):
        """Resume from a .solverstate (binary proto) or .solverstate.h5 file."""
        _snapshot.restore(self, state_file)

    def snapshot_state(self):
        """The update rule's SolverState message (Caffe's SnapshotSolverState)."""
        state = caffe_pb2.SolverState()
        state.iter = self.iter
        state.current_step = self.current_step
        from ..io.blobs import array_to_blob_proto
        for h in self.history:
            state.history.add().CopyFrom(array_to_blob_proto(h))
        return state


def _blob_loss_weights(net):
    weights = getattr(net, "blob_loss_weights", None)
    if isinstance(weights, dict):
        return weights
    by_id = {}
    for layer, tops in zip(net.layers, net.top_vecs):
        for j, top in enumerate(tops):
            w = layer.loss_weights[j] if j < len(layer.loss_weights) else 0.0
            by_id[id(top)] = w
    names = {}
    for name, blob in net.blobs.items():
        if id(blob) in by_id:
            names[name] = by_id[id(blob)]
    if isinstance(weights, (list, tuple)) and len(weights) == len(net.blobs):
        names = dict(zip(net.blobs.keys(), weights))
    return names


def _outputs(net):
    """[(name, loss weight, flat float32 values)] for each output blob of `net`."""
    weights = _blob_loss_weights(net)
    out = []
    for name in net.outputs:
        out.append((name, float(weights.get(name, 0.0)), net.blobs[name].data.ravel()))
    return out


def _loss_note(weight, value):
    if not weight:
        return ""
    return f" (* {fmt(weight)} = {fmt(np.float32(weight) * np.float32(value))} loss)"
