"""caffe-jacinto's sparse training, every vintage, as solver hooks (rules: sparsity.py).

The factory picks the hooks from the fields a solver file sets (FORK_FIELDS.md 1.3):

G1 (Jan to Jun 2017: `weight_connect_mode`, `threshold_weights`, `sparsity_threshold`,
`sparsity_target`, `sparsity_lr_mult`), when any of the G1-only fields is set -> G1Sparsity:
  * weight_connect_mode WEIGHT_DISCONNECTED_ELTWISE: at the start of training, for the
    weight (blob 0) of every Convolution and InnerProduct, zero |w| <= sparsity_threshold
    first if threshold_weights, then freeze every |w| <= sparsity_threshold: the final
    update (after momentum) is masked there, so those weights never move (the momentum
    history is not masked, as TI's Blob::Update).
  * threshold_weights: after every update, on every learnable parameter (biases too),
    zero |w| <= sparsity_threshold; once a parameter's fraction of such entries reaches
    sparsity_target (G1's default 1.0 when the file does not set it), its lr_mult becomes
    sparsity_lr_mult for good.
G2 / G3 (caffe-0.15 from June 2017, 0.16, 0.17: `sparse_mode: SPARSE_UPDATE`) ->
SparseUpdate:
  * at the start, a mask (w != 0) of every Convolution weight; after every iteration's
    update those weights are multiplied by it (the data, not the update), so zeros stay.
  * with sparsity_target > 0, incremental thresholding (0.16/0.17's ThresholdNet), after
    the update of iteration `it`, at the iteration it sees: it + 1 when
    sparsity_itr_increment_bfr_applying (the default), else it. A pass runs when that is
    >= sparsity_start_iter and a multiple of sparsity_step_iter, sparsity_factor (from
    sparsity_start_factor) <= min(target + 0.15, 0.95) and the measured sparsity (zeros of
    the masks of the Convolutions not followed by a Softmax / SoftmaxWithLoss in the layer
    list) is below the target. The pass thresholds each eligible Convolution channel by
    channel (0.16 rules: ni or no >= 32, group < no, kernel >= 3x3) with fractions
    low = factor / 2, mid = high = factor, sparsity_threshold_maxratio,
    sparsity_threshold_value_max and step factor 1e-7, re-stores the masks and adds
    sparsity_step_factor to the factor.
display_sparsity N (any vintage) -> DisplaySparsity: after the update of iteration it, when
(it + 1) % N == 0, one glog block that `caffe-lite plot` reads:
    Iteration 1000, sparsity (fraction of zero weights):
        Sparsity #0: conv1 = 0.25 (108/432)
        ...
        Total sparsity = 0.5 (9000/18000)
  over the weight (blob 0) of every Convolution and InnerProduct of the train net.

Where the vintages differ, we follow:
  * the gate and search of 0.16/0.17. caffe-0.15's ThresholdNet gates on
    factor <= target alone (no measured sparsity), uses a fixed maxratio and value_max of
    0.2 and step factor 1e-6, thresholds 1x1 and depthwise convs too, and runs at the
    iteration before the increment. 0.17 ignores sparsity_itr_increment_bfr_applying and
    always runs at the iteration before the increment; we honour the field (0.16).
  * the iteration a display belongs to: the count after the update, as Caffe's
    "Iteration N" lines (0.15 and 0.16 by default; G1 and 0.17 log it one iteration
    earlier, labelled with the count before the update).
  * the layers displayed: Convolution and InnerProduct (G1); 0.16/0.17 show Convolutions
    only and leave out one that feeds a Softmax.

Where we differ, and why:
  * State survives -snapshot resume: the G1 masks and lr switches, the G2/G3 masks and
    sparsity_factor are kept in the snapshot's side file (solvers/snapshot.py). TI restarts
    sparsity_factor from sparsity_start_factor and rebuilds its masks from the weights of
    the net before the snapshot is restored. A mask cannot always be rebuilt from the
    weights (a G1 weight that sank under the threshold after the start is zero and yet
    still trainable), so we store the masks themselves, one bit per weight.
  * TI runs one more ThresholdNet after the last iteration (and a second pass at the same
    iteration when the gate still lets it through) and logs "Sparsity after training";
    solver hooks have no such point, so we do not.
  * State blobs (BatchNorm statistics) never reach a solver hook, so G1's threshold_weights
    does not zero them; TI zeroed every learnable blob.
"""
import base64
import zlib

import numpy as np

from ..errors import CaffeError
from ..log import LOG
from ..proto import caffe_pb2
from ..solvers.hooks import ParamHook, hook_factory
from . import sparsity

F32 = np.float32
WEIGHTED = ("Convolution", "InnerProduct")
G1_ONLY = ("sparsity_threshold", "threshold_weights", "sparsity_lr_mult")


def uses_g1(solver_param):
    p = solver_param
    return (p.weight_connect_mode != caffe_pb2.WEIGHT_CONNECTED
            or any(p.HasField(name) for name in G1_ONLY))


@hook_factory
def make(solver_param):
    """The sparsity hooks the solver's fields ask for (G3 before the display, so a display
    shows the weights after that iteration's pass)."""
    hooks = []
    if uses_g1(solver_param):
        hooks.append(G1Sparsity(solver_param))
    if solver_param.sparse_mode == caffe_pb2.SPARSE_UPDATE:
        hooks.append(SparseUpdate(solver_param))
    if solver_param.display_sparsity > 0:
        hooks.append(DisplaySparsity(solver_param.display_sparsity))
    return hooks or None


# --- masks as state ------------------------------------------------------------------------

def pack_mask(mask):
    """A bool array as text for the JSON side file: one bit per entry, deflated."""
    bits = np.packbits(np.asarray(mask, bool).ravel())
    return base64.b64encode(zlib.compress(bits.tobytes())).decode("ascii")


def unpack_mask(text, shape):
    raw = np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8)
    size = int(np.prod(shape))
    return np.unpackbits(raw, count=size).astype(bool).reshape(shape)


def _restored_mask(restored, param):
    """The mask the snapshot kept for this param, or None (none kept, or another shape)."""
    text = restored.get(param.name)
    if text is None:
        return None
    try:
        return unpack_mask(text, param.data.shape)
    except (ValueError, zlib.error):
        LOG.warning("Resume file: the sparsity mask of %s does not fit its shape %s; "
                    "rebuilt from the weights", param.name, param.data.shape)
        return None


def weight_params(params, types):
    return [p for p in params if p.blob_index == 0 and p.layer.type in types]


# --- G1 ------------------------------------------------------------------------------------

class G1Sparsity(ParamHook):
    """weight_connect_mode / threshold_weights / sparsity_target / sparsity_lr_mult."""
    state_key = "jacinto-g1-sparsity"

    def __init__(self, solver_param):
        p = solver_param
        self.disconnect = p.weight_connect_mode == caffe_pb2.WEIGHT_DISCONNECTED_ELTWISE
        self.threshold_weights = bool(p.threshold_weights)
        self.threshold = F32(p.sparsity_threshold)
        # the same field means the sparsity goal in G3 (default 0); G1's default is 1
        self.target = F32(p.sparsity_target if p.HasField("sparsity_target") else 1.0)
        self.sparse_lr_mult = float(p.sparsity_lr_mult)
        self.frozen = {}        # param index -> bool array, True where the update is masked
        self.names = {}         # param index -> name, for the snapshot
        self.switched = set()   # names of the params whose lr_mult is sparse_lr_mult now
        self._restored = {}

    def start(self, params, it, nets):
        if not self.disconnect:
            return
        for param in weight_params(params, WEIGHTED):
            kept = _restored_mask(self._restored, param)
            if kept is None:
                if self.threshold_weights:
                    sparsity.zero_out(param.data, self.threshold, out=param.data)
                kept = ~sparsity.zero_mask(param.data, self.threshold)
            self.frozen[param.index] = ~kept
            self.names[param.index] = param.name
        self._restored = {}
        LOG.info("All weights with |w| <= %g of the Convolution and InnerProduct layers are "
                 "frozen (weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE)", self.threshold)

    def update_value(self, param, it):
        frozen = self.frozen.get(param.index)
        if frozen is not None:
            np.copyto(param.diff, 0, where=frozen)

    def after_update(self, param, it):
        if not self.threshold_weights:
            return
        zero = sparsity.zero_mask(param.data, self.threshold)
        np.copyto(param.data, 0, where=zero)
        name = param.name
        if name in self.switched:
            return
        # after the zeroing, TI's count of |w| <= threshold is the count just zeroed
        if F32(np.count_nonzero(zero)) / F32(zero.size) >= self.target:
            self.switched.add(name)
            LOG.info("%s reached sparsity_target %g (|w| <= %g): its lr_mult is now "
                     "sparsity_lr_mult %g", name, self.target, self.threshold,
                     self.sparse_lr_mult)

    def lr_mult(self, param, lr_mult, it):
        return self.sparse_lr_mult if param.name in self.switched else lr_mult

    def get_state(self):
        return {"switched": sorted(self.switched),
                "masks": {self.names[i]: pack_mask(~f) for i, f in self.frozen.items()}}

    def set_state(self, state):
        self.switched = set(state.get("switched", ()))
        self._restored = dict(state.get("masks", {}))


# --- G2 / G3 -------------------------------------------------------------------------------

class SparseUpdate(ParamHook):
    """sparse_mode: SPARSE_UPDATE, with sparsity_target > 0 the incremental thresholding."""
    state_key = "jacinto-sparse-update"

    def __init__(self, solver_param):
        p = solver_param
        self.target = F32(p.sparsity_target)
        if self.target > 0 and p.sparsity_step_iter <= 0:
            raise CaffeError(f"solver: sparsity_step_iter must be > 0 with sparsity_target > 0 "
                             f"(got {p.sparsity_step_iter})")
        self.step_iter = int(p.sparsity_step_iter)
        self.start_iter = int(p.sparsity_start_iter)
        self.step_factor = F32(p.sparsity_step_factor)
        self.factor = F32(p.sparsity_start_factor)
        self.maxratio = F32(p.sparsity_threshold_maxratio)
        self.value_max = F32(p.sparsity_threshold_value_max)
        self.increment_before = bool(p.sparsity_itr_increment_bfr_applying)
        self.rules = sparsity.eligibility("channel", "0.16")
        self.convs = []      # (SolverParam, counts in the measured sparsity)
        self.frozen = {}     # param name -> bool array, True where the weight stays 0
        self._restored = {}

    def start(self, params, it, nets):
        net = nets[0]
        measured = set(sparsity.measured_layers([layer.type for layer in net.layers]))
        for param in weight_params(params, ("Convolution",)):
            layer_id = net.learnable_param_owners[param.index][0]
            self.convs.append((param, layer_id in measured))
            kept = _restored_mask(self._restored, param)
            self.frozen[param.name] = ~kept if kept is not None else param.data == 0
        self._restored = {}
        LOG.info("All zero weights of convolution layers are frozen (sparse_mode: "
                 "SPARSE_UPDATE)")
        if self.target > 0 and not any(m for _, m in self.convs):
            LOG.warning("sparsity_target: no Convolution counts in the measured sparsity "
                        "(each one feeds a Softmax), so no thresholding pass will run, as in "
                        "caffe-jacinto")

    def measured_sparsity(self):
        """Zeros of the masks over the measured Convolutions (NaN when there are none)."""
        zeros = count = 0
        for param, measured in self.convs:
            if measured:
                zeros += int(np.count_nonzero(self.frozen[param.name]))
                count += self.frozen[param.name].size
        return F32(zeros) / F32(count) if count else F32("nan")

    def after_step(self, params, it):
        seen = it + 1 if self.increment_before else it
        if self.target > 0 and seen >= self.start_iter and seen % self.step_iter == 0:
            measured = self.measured_sparsity()
            if sparsity.g3_pass_due(seen, self.factor, measured, self.target,
                                    self.start_iter, self.step_iter):
                self._threshold_pass(seen, measured)
        for param, _ in self.convs:
            np.copyto(param.data, 0, where=self.frozen[param.name])

    def _threshold_pass(self, seen, measured):
        LOG.info("Finding and applying sparsity: sparsity_target=%g sparsity_factor=%g "
                 "sparsity_achieved=%g iter=%d", self.target, self.factor, measured, seen)
        fractions = sparsity.g3_fractions(self.factor)
        for param, _ in self.convs:
            done, _ = sparsity.threshold_conv(
                param.data, param.layer.convolution_param.group, fractions, self.maxratio,
                self.value_max, sparsity.G3_STEP_FACTOR, self.rules, channel_wise=True,
                out=param.data)
            if done is not None:
                LOG.info("%s ZeroWeightsFraction=%g", param.layer.name, done.zero_fraction)
            self.frozen[param.name] = param.data == 0
        self.factor = F32(self.factor + self.step_factor)

    def get_state(self):
        return {"sparsity_factor": float(self.factor),
                "masks": {name: pack_mask(~f) for name, f in self.frozen.items()}}

    def set_state(self, state):
        self.factor = F32(state.get("sparsity_factor", self.factor))
        self._restored = dict(state.get("masks", {}))


# --- display_sparsity ----------------------------------------------------------------------

def sparsity_lines(entries):
    """The report of [(name, zero count, count)]: a line per weight, then the total."""
    lines = []
    total_zeros = total = 0
    for i, (name, zeros, count) in enumerate(entries):
        lines.append(f"    Sparsity #{i}: {name} = {_ratio(zeros, count):g} ({zeros}/{count})")
        total_zeros += zeros
        total += count
    lines.append(f"    Total sparsity = {_ratio(total_zeros, total):g} ({total_zeros}/{total})")
    return lines


def _ratio(zeros, count):
    return float(F32(zeros) / F32(count)) if count else 0.0


def log_sparsity(header, entries):
    LOG.info("%s", header)
    for line in sparsity_lines(entries):
        LOG.info("%s", line)


class DisplaySparsity(ParamHook):
    """display_sparsity: the zero fraction of every Convolution / InnerProduct weight."""

    def __init__(self, period):
        self.period = int(period)
        self.weights = []

    def start(self, params, it, nets):
        self.weights = weight_params(params, WEIGHTED)

    def after_step(self, params, it):
        done = it + 1
        if done % self.period:
            return
        entries = [(p.layer.name, sparsity.zero_count(p.data), p.data.size)
                   for p in self.weights]
        log_sparsity(f"Iteration {done}, sparsity (fraction of zero weights):", entries)
