"""Wei Wen's SSL training (wenwei202/caffe scnn) as one solver hook (rules: group_lasso.py).

The fields (FORK_FIELDS.md 3):
  SolverParameter  breadth_decay, kernel_shape_decay, block_group_decay (all 0)
  ParamSpec        breadth_decay_mult, kernel_shape_decay_mult (0), block_group_lasso
                   {xdimen 1, ydimen 1, block_decay_mult 1}, decay_proto (""),
                   regularization_type (solvers/regularizers.py)
  LayerParameter   connectivity_mode (CONNECTED, DISCONNECTED_ELTWISE, DISCONNECTED_GRPWISE)

A run uses SSL when the solver sets one of its three decays to a non-zero value, or a layer
of the train net sets connectivity_mode other than CONNECTED or a param with an SSL field
(regularization_type alone does not count: it is a plain per-param penalty, honoured apart).
Such a run, per iteration, as scnn's SGDSolver and Net::Update:
  * regularize, after the solver's weight decay, for every updated param:
      decay_proto       the param's weight decay is weight_decay * decay_mult * (m * w)
                        (L1: m * sign(w)), m read from the binary BlobProto at that path
      kernel_shape      lam = kernel_shape_decay * kernel_shape_decay_mult, per column of
                        each convolution group
      breadth           lam = breadth_decay * breadth_decay_mult, per row
      block_group_lasso lam = block_group_decay * block_decay_mult, per block, each spec
    each adding lam * w / ||group||_2 (group_lasso.py) in that order, as the fork.
  * update_value: a frozen weight's update is 0 (the fork's Blob::Update multiplies the diff
    by the connectivity mask; the momentum history is not masked, so it still accumulates).
  * after_update: every param entry with |w| < 1e-4 becomes 0, biases included (the fork's
    Blob::Zerout in Net::Update). The history is untouched, so momentum can move a weight off
    zero at the next update, as in the fork.
  * at each `display` iteration, after "Iteration N, lr = X", the fork's four lines over every
    param (a value and a tab per param, in param order; the block line has each spec's
    `(xdimen,ydimen):value;`), then after the update the regularization term (the
    weight-decay terms plus lam * sum ||group||, on the weights before the update):
        Element Sparsity %: 61.7284\t0\t67.7083\t0\t     (% of |w| < 1e-4)
         Column Sparsity %: 11.1111\t0\t27.3148\t0\t     (% of all-zero columns)
            Row Sparsity %: 16.6667\t0\t25\t0\t          (% of all-zero rows)
          Block Sparsity %: (3,2):22.2222;\t\t(8,2):14.8148;\t\t
        Total regularization terms: 0.112351
Before the first iteration, for every Convolution, Deconvolution and InnerProduct weight with
a connectivity_mode (the fork's WeightAlign): |w| < 1e-4 becomes 0, then the frozen set is
each 0 (DISCONNECTED_ELTWISE) or each weight in an all-zero row or an all-zero column of its
convolution group (DISCONNECTED_GRPWISE).

Plain BVLC runs are untouched: the factory makes no hook unless the solver or its train net
may use SSL, and a hook whose run turns out not to use it does nothing at all. In particular
the hard zeroing, unconditional in scnn, happens only in SSL runs, so BVLC golden parity holds.

The seam for decay_proto: SGDSolver.regularize adds weight_decay * net.params_weight_decay[i]
* {w | sign(w)} before the hooks' regularize. For a param with decay_proto the hook takes that
decay over: at start it sets the solver's entry net.params_weight_decay[i] (Caffe's
Net::params_weight_decay) to 0 and adds decay * (m * w) itself, so the decay is applied once,
rounded as the fork rounds it (temp = w * m, then diff += decay * temp). Subtracting the plain
decay afterwards would leave a rounding error of the larger term in the gradient.

Where we differ from scnn, and why:
  * Breadth and kernel-shape lasso run on CPU. scnn refuses them in CPU mode ("deprecated in
    CPU mode, use block group decay") and has them on GPU only; the formula is the GPU one.
  * WeightAlign (connectivity_mode) runs at the start of training whatever the weights came
    from; scnn runs it only after copying a binary caffemodel (-weights, and again on
    -snapshot resume from the snapshot's caffemodel). Both agree for its purpose, fine-tuning
    a sparse caffemodel. Nor do we write each layer's `<name>.weight` Matrix Market file.
  * The frozen sets survive -snapshot resume in the snapshot's side file (state_key), so a
    resumed run equals the straight one; scnn rebuilds them from the snapshot's weights, which
    also freezes the weights that the hard zeroing set to 0 during the run.
  * State blobs (BatchNorm statistics) never reach a solver hook, so they are not zeroed;
    scnn zeroes every learnable blob.
  * The "Total regularization terms" line has no "loss+regular." part (a hook does not see
    the smoothed loss), and the fork's line break after each sparsity header is a space, so
    that each report is one glog line.
  * A decay_proto path is read relative to the working directory, as scnn; its BlobProto may
    have any shape with the param's count (scnn requires the same shape string).
  * A block_group_lasso that does not tile its param is an error before the first iteration
    (scnn fails when it first displays or regularizes it).
"""
import os
import re
import zlib

import numpy as np
from google.protobuf import text_format

from ..errors import CaffeError
from ..io.binary import read_blob_proto
from ..io.blobs import blob_proto_to_array
from ..log import LOG
from ..proto import caffe_pb2
from ..solvers.base import fmt
from ..solvers.hooks import ParamHook, hook_factory
from ..solvers.regularizers import param_regularization_type
from . import group_lasso as gl
from .jacinto_sparsity import pack_mask, unpack_mask

F32 = np.float32
# the layers whose weight connectivity_mode freezes (the fork's WeightAlign), the intel
# branch's fused layers included: their blob 0 is their convolution's or inner product's
ALIGNED = ("Convolution", "Deconvolution", "InnerProduct", "ConvolutionReLU",
           "ConvolutionReLUPool", "ConvolutionReLUPoolLRN", "InnerProductReLUDropout")
SOLVER_DECAYS = ("breadth_decay", "kernel_shape_decay", "block_group_decay")
_CONNECTED = caffe_pb2.LayerParameter.CONNECTED
_ELTWISE = caffe_pb2.LayerParameter.DISCONNECTED_ELTWISE
# A net text that names none of these sets no SSL field (a cheap look before the net exists).
_NET_FIELDS = re.compile(r"\b(?:connectivity_mode|decay_proto|block_group_lasso|"
                         r"breadth_decay_mult|kernel_shape_decay_mult)\b")


def solver_uses_ssl(solver_param):
    return any(getattr(solver_param, name) != 0 for name in SOLVER_DECAYS)


def spec_uses_ssl(spec):
    return bool(spec.breadth_decay_mult or spec.kernel_shape_decay_mult
                or len(spec.block_group_lasso) or spec.decay_proto)


def layer_uses_ssl(layer_param):
    return (layer_param.connectivity_mode != _CONNECTED
            or any(spec_uses_ssl(spec) for spec in layer_param.param))


def may_use_ssl(solver_param):
    """Whether the solver or its train net may set an SSL field; start() decides for sure.

    Hooks are made before the nets, so the train net's text is looked at here: inline, or
    the file as Caffe opens it (from the working directory). A file found only beside the
    solver file (caffe-lite's fallback) cannot be looked at, and gets the hook."""
    p = solver_param
    if solver_uses_ssl(p):
        return True
    for field in ("train_net_param", "net_param"):
        if p.HasField(field):
            return bool(_NET_FIELDS.search(text_format.MessageToString(getattr(p, field))))
    path = p.train_net if p.HasField("train_net") else p.net
    if not os.path.isfile(path):
        return True
    with open(path, encoding="utf-8", errors="replace") as f:
        return bool(_NET_FIELDS.search(f.read()))


@hook_factory
def make(solver_param):
    return SSLTraining(solver_param) if may_use_ssl(solver_param) else None


def conv_group(layer_param):
    """The fork's param group: convolution_param.group for a layer that has one, else 1."""
    return layer_param.convolution_param.group if layer_param.HasField("convolution_param") \
        else 1


def load_decay_mult(path, shape, what):
    """The per-element decay multipliers of decay_proto `path`, shaped as the param."""
    if not os.path.isfile(path):
        raise CaffeError(f"{what}: decay_proto file '{path}' does not exist")
    mult = blob_proto_to_array(read_blob_proto(path), dtype=F32, name=path)
    count = int(np.prod(shape, dtype=np.int64))
    if mult.size != count:
        dims = " ".join(str(d) for d in shape)
        raise CaffeError(f"{what}: decay_proto '{path}' holds {mult.size} values, the param "
                         f"has {count} (shape {dims})")
    return mult.reshape(shape)


def sparsity_lines(entries):
    """The fork's four report lines over [(data, block specs)], one entry per param."""
    def row(values):
        return "".join(f"{v}\t" for v in values)

    blocks = ["".join(f"({b.xdimen},{b.ydimen}):{fmt(gl.block_sparsity(w, b.ydimen, b.xdimen))};"
                      for b in specs) for w, specs in entries]
    return [
        "    Element Sparsity %: " + row(fmt(gl.element_sparsity(w)) for w, _ in entries),
        "     Column Sparsity %: " + row(fmt(gl.column_sparsity(w)) for w, _ in entries),
        "        Row Sparsity %: " + row(fmt(gl.row_sparsity(w)) for w, _ in entries),
        "      Block Sparsity %: " + row(blocks),
    ]


def _what(param):
    return f"layer '{param.layer.name}' param {param.blob_index}"


class SSLTraining(ParamHook):
    """Group lasso, decay_proto, connectivity_mode, hard zeroing and the sparsity report."""
    state_key = "ssl-connectivity"

    def __init__(self, solver_param):
        p = solver_param
        self.solver_param = p
        self.weight_decay = F32(p.weight_decay)
        self.breadth_decay = F32(p.breadth_decay)
        self.kernel_shape_decay = F32(p.kernel_shape_decay)
        self.block_group_decay = F32(p.block_group_decay)
        self.display = int(p.display)
        self.active = False
        self.params = []
        self.decay_protos = {}   # param index -> (multipliers, the decay_mult taken over)
        self.frozen = {}         # param index -> bool array, True where the update is masked
        self.names = {}          # param index -> name, for the snapshot
        self.term = F32(0)
        self._reported = None
        self._restored = {}

    # --- start ------------------------------------------------------------------------------
    def start(self, params, it, nets):
        self.params = list(params)
        self.active = solver_uses_ssl(self.solver_param) or any(
            layer_uses_ssl(p.layer) for p in params)
        if not self.active:
            return
        for p in params:
            for b in p.spec.block_group_lasso:
                gl.check_tiling(p.data.shape, b.ydimen, b.xdimen, _what(p))
        solver_decay_mults = nets[0].params_weight_decay
        for p in params:
            if p.spec.decay_proto:
                mult = load_decay_mult(p.spec.decay_proto, p.data.shape, _what(p))
                LOG.info("Copying weight decay blob %s from %s", " ".join(map(str, mult.shape)),
                         p.spec.decay_proto)
                self.decay_protos[p.index] = (mult, solver_decay_mults[p.index])
                solver_decay_mults[p.index] = 0.0
        for p in params:
            if (p.blob_index == 0 and p.layer.type in ALIGNED
                    and p.layer.connectivity_mode != _CONNECTED):
                self._align(p)
        self._restored = {}

    def _align(self, param):
        """The fork's WeightAlign, unless the snapshot being resumed kept the frozen set."""
        name, w = param.layer.name, param.data
        kept = None
        text = self._restored.get(param.name)
        if text is not None:
            try:
                kept = unpack_mask(text, w.shape)
            except (ValueError, zlib.error):
                LOG.warning("Resume file: the connectivity mask of %s does not fit its shape "
                            "%s; rebuilt from the weights", param.name, w.shape)
        if kept is None:
            sparsity = F32(np.count_nonzero(gl.zero_mask(w))) / F32(w.size)
            LOG.info("layer\t%s\thas sparsity of %s", name, fmt(sparsity))
            gl.zero_out(w)
            if param.layer.connectivity_mode == _ELTWISE:
                LOG.info("all zero weights of %s are frozen", name)
                kept = gl.eltwise_mask(w)
            else:
                LOG.info("weights lying in all-zero groups of %s are frozen", name)
                kept = gl.grpwise_mask(w, conv_group(param.layer))
        self.frozen[param.index] = ~kept
        self.names[param.index] = param.name

    # --- per iteration ----------------------------------------------------------------------
    def _display_due(self, it):
        return self.display > 0 and it % self.display == 0

    def regularize(self, param, it):
        if not self.active:
            return
        display = self._display_due(it)
        if display and self._reported != it:
            # the first param of a display iteration: the report is on the weights before
            # this iteration's update, right after "Iteration N, lr = X", as in the fork
            self._reported = it
            self.term = F32(0)
            for line in sparsity_lines([(p.data, p.spec.block_group_lasso)
                                        for p in self.params]):
                LOG.info("%s", line)
        spec, w, diff = param.spec, param.data, param.diff
        kind = param_regularization_type(self.solver_param, spec)
        taken = self.decay_protos.get(param.index)
        if taken is not None:
            mult, decay_mult = taken
            local_decay = self.weight_decay * F32(decay_mult)
            if local_decay:
                grad, term = gl.elementwise_decay(w, mult, kind, local_decay)
                diff += grad
                self.term += term
        elif display:
            local_decay = self.weight_decay * F32(spec.decay_mult)
            if local_decay:
                self.term += gl.plain_decay_term(w, kind, local_decay)
        for grad, term in self._lasso_terms(param):
            diff += grad
            self.term += term

    def _lasso_terms(self, param):
        """(gradient, term) of each group lasso of the param, in the fork's order."""
        spec, w, what = param.spec, param.data, _what(param)
        lam = self.kernel_shape_decay * F32(spec.kernel_shape_decay_mult)
        if lam:
            yield gl.kernel_shape_lasso(w, conv_group(param.layer), lam, what)
        lam = self.breadth_decay * F32(spec.breadth_decay_mult)
        if lam:
            yield gl.breadth_lasso(w, lam, what)
        for b in spec.block_group_lasso:
            lam = F32(b.block_decay_mult) * self.block_group_decay
            if lam:
                yield gl.block_lasso(w, b.ydimen, b.xdimen, lam, what)

    def update_value(self, param, it):
        frozen = self.frozen.get(param.index)
        if frozen is not None:
            np.copyto(param.diff, 0, where=frozen)

    def after_update(self, param, it):
        if self.active:
            gl.zero_out(param.data)

    def after_step(self, params, it):
        if self.active and self._display_due(it):
            LOG.info("    Total regularization terms: %s", fmt(self.term))

    # --- snapshot ---------------------------------------------------------------------------
    def get_state(self):
        return {"masks": {self.names[i]: pack_mask(~f) for i, f in self.frozen.items()}}

    def set_state(self, state):
        self._restored = dict((state or {}).get("masks", {}))
