"""The solver side of DNS and INQ: one hook that every solver gets.

  * The solver iteration goes into every masked layer (layers/mask_blobs.py IterationAware)
    of the train and test nets before each iteration: DNS's update probability and INQ's
    "quantize at iteration 0" read it, as the forks' layers read the iter_ their Net pushes.
  * NNMC's INQ freezing: for each INQConvolution / INQInnerProduct weight and bias, the
    update (weight decay included) and every history buffer (momentum, Adam's moments) are
    multiplied by the layer's mask after the rule has computed them, so a quantized entry
    never moves and keeps no momentum. NNMC masks the momentum of SGD's family; we mask the
    history of every rule.
  * Official INQ (`-inq_portion P` on `train`, plain Caffe files): OfficialInqHook quantizes
    blob 0 of every layer with a weight (compress/inq.py official_quantize) when training
    starts, from the loaded weights or the resumed snapshot, as the official Blob::FromProto
    does at each load; its masks live in memory only and freeze the same way.

A plain net has no masked layer: the hook finds none at start and does nothing after.
"""
import numpy as np

from ..errors import CaffeError
from ..log import LOG
from ..solvers.hooks import ParamHook, hook_factory
from . import inq


def _layers_by_param(net):
    return {id(layer.param): layer for layer in net.layers}


class MaskedLayersHook(ParamHook):
    def __init__(self):
        self.aware = []
        self.frozen = {}     # param index -> mask array (0 = frozen)

    def start(self, params, it, nets):
        self.aware = [layer for net in nets for layer in net.layers
                      if callable(getattr(layer, "set_iteration", None))]
        self._push(it)
        owners = _layers_by_param(nets[0])
        self.frozen = {}
        for p in params:
            masks_of = getattr(owners.get(id(p.layer)), "frozen_masks", None)
            if masks_of is not None:
                mask = masks_of().get(p.blob_index)
                if mask is not None:
                    self.frozen[p.index] = mask

    def _push(self, it):
        for layer in self.aware:
            layer.set_iteration(it)

    def update_value(self, param, it):
        mask = self.frozen.get(param.index)
        if mask is not None:
            freeze(param, mask)

    def after_step(self, params, it):
        if self.aware:
            self._push(it + 1)

    def idle(self):
        return not self.aware and not self.frozen


def freeze(param, mask):
    """Zero the update and the history of `param` wherever `mask` is 0."""
    np.multiply(param.diff, mask, out=param.diff)
    for h in param.history:
        np.multiply(h, mask, out=h)


@hook_factory
def _masked_layers(solver_param):
    return MaskedLayersHook()


class OfficialInqHook(ParamHook):
    """Official INQ's load-time quantization of blob 0 of every layer, `portion` quantized."""

    def __init__(self, portion):
        if not 0 <= portion <= 1:
            raise CaffeError(f"-inq_portion must be in [0, 1] (the fraction of each weight "
                             f"blob quantized), got {portion:g}")
        self.portion = portion
        self.masks = {}

    def start(self, params, it, nets):
        self.masks = {}
        for p in params:
            if p.blob_index != 0 or p.data.size == 0:
                continue
            self.masks[p.index] = inq.official_quantize(p.data, self.portion)
            frozen = int((self.masks[p.index] == 0).sum())
            _, exps = inq.power_of_two_report(p.data[self.masks[p.index] == 0])
            LOG.info("INQ %s: %d of %d weights quantized (%g%%), exponents %s", p.name,
                     frozen, p.data.size, 100 * self.portion,
                     f"{exps[0]}..{exps[-1]}" if exps else "none")
        # the test nets share the weights: quantized in place, they see the same values

    def update_value(self, param, it):
        mask = self.masks.get(param.index)
        if mask is not None:
            freeze(param, mask)
