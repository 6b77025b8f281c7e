"""DeePhi's `finetune` seam (#13): a solver hook that holds the pruned channels at zero.

The removed slots (channel_prune.removals: the pruned filters and biases, their Scale / Bias
/ PReLU entries and the input weights that read them) get no update and no momentum, and
are set to 0 after every update, so the fine-tuned snapshots are masked models that the
next round (or `transform`) reads the pruning back from. BatchNorm statistics are state
blobs that no hook sees; a pruned channel is 0 everywhere, so they stay 0 by themselves.
"""
from ..solvers.hooks import ParamHook
from .channel_prune import zero_slots


class HoldPrunedChannels(ParamHook):
    """Keep the slots of `removals` ([(layer, blob, axis, removed)]) at 0."""

    def __init__(self, removals):
        self.masks = {}
        for layer, blob, axis, removed in removals:
            self.masks.setdefault((layer, blob), []).append((axis, removed))

    def _masks(self, param):
        return self.masks.get((param.layer.name, param.blob_index), ())

    def start(self, params, it, nets):
        for param in params:
            for axis, removed in self._masks(param):
                zero_slots(param.data, axis, removed)

    def update_value(self, param, it):
        for axis, removed in self._masks(param):
            zero_slots(param.diff, axis, removed)
            for history in param.history:
                zero_slots(history, axis, removed)

    def after_update(self, param, it):
        for axis, removed in self._masks(param):
            zero_slots(param.data, axis, removed)
