"""Solver hooks: where the forks' per-parameter rules plug into Caffe's update.

A hook is a small object with any of these methods (ParamHook has them all as no-ops); each
gets the parameter it acts on as a SolverParam record and the iteration, never the solver:

  start(params, it, nets)          once, before the first iteration the solver runs (after a
                                   -snapshot restore), with every updated param and the nets
                                   ([train net] + test nets): build masks, attach net hooks
  regularize(param, it)            after weight decay: add a gradient term into param.diff
                                   (group lasso, per-element decay multipliers)
  lr_mult(param, lr_mult, it)      return the lr multiplier to use this iteration
                                   (caffe-jacinto's sparsity_lr_mult)
  update_value(param, it)          the rule has written the update into param.diff and its
                                   history: mask them before the update is applied
                                   (frozen zeros, INQ's quantized weights)
  after_update(param, it)          after w -= update: change the weights themselves
                                   (thresholding, SSL's hard zeroing, re-applied masks)
  after_step(params, it)           once per iteration, after every parameter's after_update,
                                   with all of them (net-wide schedules and reports)
  after_snapshot(net, model_path, it)  after a snapshot's caffemodel is written (side files)
  gradients_ready(params, it)      once per iteration, after the iter_size forward/backward
                                   passes and before clipping, normalisation and the update,
                                   with every updated param: the summed gradients may be
                                   replaced (data-parallel training averages them over its
                                   ranks here, Caffe's P2PSync::on_gradients_ready)

A hook with a `state_key` keeps state across -snapshot resume: get_state() (JSON-able) is
written into the snapshot's side file (solvers/snapshot.py) under that key, and set_state()
gets it back on restore, before start().

Per iteration the SGD family runs, for each updated parameter in turn: Normalize,
Regularize (weight decay, then every hook's regularize), ComputeUpdateValue with the hooks'
lr_mult, update_value, and then, for all parameters, the update w -= diff, after_update and
after_step. State blobs (BatchNorm statistics, DNS/INQ masks) are never given to a hook and
never updated.

Hooks come from two places: `solver.add_hook(hook)`, and factories registered with
@hook_factory, called once per solver with its SolverParameter; a factory returns a hook
(or a list of hooks) when the solver's fields ask for it, else None. A fork module registers
its factory at import; `caffe_lite.solvers` imports the modules that do.
"""
from dataclasses import dataclass, field

import numpy as np

HOOK_FACTORIES = []


def hook_factory(fn):
    """Register fn(solver_param) -> hook | [hooks] | None, called for every new solver."""
    if fn not in HOOK_FACTORIES:
        HOOK_FACTORIES.append(fn)
    return fn


def hooks_for(solver_param):
    from ..plugins import load_plugins
    load_plugins()
    hooks = []
    for factory in HOOK_FACTORIES:
        made = factory(solver_param)
        if made is None:
            continue
        hooks.extend(made if isinstance(made, (list, tuple)) else [made])
    return hooks


@dataclass(eq=False)
class SolverParam:
    """One learnable parameter as a hook sees it.

    index: its position in net.learnable_params (and in the solverstate history);
    data, diff: the blob's arrays (diff holds the gradient, then the update);
    spec: the owner's ParamSpec (lr_mult, decay_mult and the forks' fields);
    layer: the owning layer's LayerParameter (its type, convolution_param.group, ...);
    blob_index: which of the layer's blobs it is (0 weight, 1 bias, ...);
    history: the update rule's history arrays for it (momentum, ...), in place.
    """
    index: int
    blob: object
    spec: object
    layer: object
    blob_index: int
    _histories: list = field(repr=False, default_factory=list)
    _count: int = 0

    @property
    def data(self):
        return self.blob.data

    @property
    def diff(self):
        return self.blob.diff

    @property
    def name(self):
        return f"{self.layer.name}[{self.blob_index}]"

    @property
    def history(self):
        """The rule's history arrays of this param (one per history set)."""
        h, n = self._histories, self._count
        return [h[k] for k in range(self.index, len(h), n)] if n else []


class ParamHook:
    """Base class with every hook method as a no-op; subclass and override what you need."""

    #: the name this hook's get_state() is saved under in a snapshot; None: no state
    state_key = None

    def start(self, params, it, nets):
        pass

    def get_state(self):
        return None

    def set_state(self, state):
        pass

    def after_snapshot(self, net, model_path, it):
        pass

    def gradients_ready(self, params, it):
        pass

    def regularize(self, param, it):
        pass

    def lr_mult(self, param, lr_mult, it):
        return lr_mult

    def update_value(self, param, it):
        pass

    def after_update(self, param, it):
        pass

    def after_step(self, params, it):
        pass

    def idle(self):
        """Whether regularize, lr_mult, update_value, after_update and after_step would
        change nothing this iteration (asked after start): the solver may then run its
        update in one fused pass. A hook without this method is never idle."""
        return False


class UpdateMask(ParamHook):
    """pycaffe-level `solver.set_update_mask`: multiply one param's update (and optionally
    its history) by a fixed mask, so entries where the mask is 0 never move."""

    def __init__(self):
        self.masks = {}

    def set(self, index, mask, history):
        if mask is None:
            self.masks.pop(index, None)
        else:
            self.masks[index] = (mask, bool(history))

    def update_value(self, param, it):
        masked = self.masks.get(param.index)
        if masked is None:
            return
        mask, mask_history = masked
        np.multiply(param.diff, mask, out=param.diff)
        if mask_history:
            for h in param.history:
                np.multiply(h, mask, out=h)
