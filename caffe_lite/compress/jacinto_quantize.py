"""caffe-jacinto quantization in training and inference: the net-level and solver-level flows.

Two hooks, one per form of the schema (FORK_FIELDS.md 1.4); the arithmetic is fixed_point.py.

Net level, NetParameter `quantize: true` + `net_quantization_param` (Q-B caffe-0.16 head,
Q-C caffe-0.17): a net hook, so train, test and deploy nets and `caffe-lite test` / `time`
all quantize. Each net counts its forward passes (infer_count, from 0, TEST included):
  * at the end of every pass it records per-blob ranges (fixed_point.qc/qb_range_update);
  * from pass `quantization_start` (needs > 0) it computes each blob's scale from the ranges at
    the start of the pass and, right after a selected layer's forward, rounds its tops in
    place; at pass `quantization_start` itself (quantized_infer_count 0) it also rounds the
    weights of the selected Convolution / InnerProduct / Deconvolution layers in place,
    once (they are float again after the solver's next update, as in TI);
  * rounding is STOCHASTIC in TRAIN and `rounding_scheme` in TEST.
Q-C selects Convolution, InnerProduct, Deconvolution, BatchNorm, Scale, ReLU, PReLU, Eltwise,
Concat, Bias, Pooling and every type whose name contains "data" (its first top only), skips
`ignored_layer_names`, and does not round the output of a layer "merged" with its consumer
(Convolution / InnerProduct / Deconvolution -> BN/Scale/ReLU, BN -> Scale/ReLU, Scale -> ReLU,
BN/Scale -> Conv without a Conv before), found on
the graph; weight blob 0 uses bitwidth_weights, the bias bitwidth_bias. Q-B decides by list
order instead (the next layer), has one range and scale for all tops, rounds weight blob 0
only, and only the layer types whose 0.16 code calls Quantize round at all (Convolution,
Deconvolution, InnerProduct, Eltwise, Concat, Scale, ReLU). A net is Q-B when its
net_quantization_param sets a 0.16-only field (power2_range, insert_quantization_param).
Each layer's LayerParameter.quantization_param gets the chosen qparams (they reach the
caffemodel): at the first quantized pass, at every `display_quantization` pass (which also
logs them, as TI does) and on write_quantization_params(net).

Solver level, Q-A (caffe-0.15, tidsp.rc0.16.1: `insert_quantization_param: true`,
`quantization_start_iter`, `quantization_param { bw_layer_in bw_layer_out bw_weights }`,
`unsigned_check_in/out`, `quantize_weights`, `quantize_activations`,
`display_quantization`): a solver hook. Before `quantization_start_iter` it keeps, after each
update, Q-A's moving averages of every train-net layer's input, output and weight ranges; at
that iteration it gives each selected layer (TI's AddQuantizationParams, by list order) its
fractional lengths, written into LayerParameter.quantization_param, and from then on the
train net and the test nets run with fixed-point weights (Layer.param_transform over the
float blobs the solver keeps updating: straight-through shadow weights) and fixed-point
outputs of the selected layers. The ranges and the chosen widths are kept in the snapshot
(the lengths follow from them).

Where we differ from TI, and why:
  * Q-A: TI rounds the weights in place every forward pass and the update then applies to
    the rounded weights; we keep float shadow weights and round a copy (the standard
    straight-through form; the expected update is the same with stochastic rounding). TI
    quantizes the test nets' weights only (through the shared blobs), not their outputs; we
    quantize both, so the test score during training is the fixed-point one. TI parses
    quantize_weights / quantize_activations but only its display reads them; we honour them
    as documented. TI stops with "Qformat error" when fl_in + fl_weights < fl_out; we warn.
  * Q-B/Q-C: a pass that stops before the last layer (forward_to) is finished at the start
    of the next one; TI finishes every ForwardFromTo. 0.17's scale_applied chain is not
    kept (it cancels except for power-of-two activations with non-power-of-two weights).
    A prototxt's own per-layer quantization_param is applied by layer_qparams.py where the
    net does not choose its formats itself (update_quantization_param: false, 0.16 without
    insert_quantization_param, or quantize: false).
  * Only DYNAMIC_FIXED_POINT (and FLOAT: off) precision; MINIFLOAT and
    INTEGER_POWER_OF_2_WEIGHTS raise an error.
"""
import numpy as np

from .. import common
from ..errors import CaffeError
from ..log import LOG
from ..net_hooks import NetHook, net_hook_factory
from ..proto import caffe_pb2
from ..solvers.hooks import ParamHook, hook_factory
from . import fixed_point as fp

QP = caffe_pb2.QuantizationParameter
TRAIN = caffe_pb2.TRAIN

WEIGHTED = ("Convolution", "InnerProduct", "Deconvolution")
QC_TYPES = WEIGHTED + ("BatchNorm", "Scale", "ReLU", "PReLU", "Eltwise", "Concat", "Bias",
                       "Pooling")
#: the layers whose caffe-0.16 Forward calls Quantize (cuDNN ReLU included: TI trained on GPU)
QB_APPLIED = WEIGHTED + ("Eltwise", "Concat", "Scale", "ReLU")
_FLT_MAX = float(np.finfo(np.float32).max)
_FLT_MIN = float(np.finfo(np.float32).tiny)


def _fmt(value):
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    return "%g" % value


# --- which layers are quantized: pure functions of the types and the wiring ----------------
class Graph:
    """The layer types, names and blob wiring of a net (with its Split layers), as TI's
    Net sees them: bottoms[i] / tops[i] are blob ids."""

    def __init__(self, types, names, bottoms, tops):
        self.types, self.names = list(types), list(names)
        self.bottoms, self.tops = [list(b) for b in bottoms], [list(t) for t in tops]

    @classmethod
    def of(cls, net):
        recs = net._layer_records
        return cls([r.layer.type for r in recs], [r.name for r in recs],
                   [r.bottom_ids for r in recs], [r.top_ids for r in recs])

    def __len__(self):
        return len(self.types)

    def next_id(self, i):
        """The first consumer of the first consumed top of layer i (GetTopLayerIds)."""
        for blob in self.tops[i]:
            for j in range(i + 1, len(self)):
                if blob in self.bottoms[j]:
                    return j
        return None

    def prev_id(self, i):
        """The last writer, before i, of layer i's first bottom (GetBottomLayerIds)."""
        for blob in self.bottoms[i][:1]:
            found = None
            for j in range(i):
                if blob in self.tops[j]:
                    found = j
            return found
        return None

    def type_of(self, j):
        return "" if j is None else self.types[j]


def qc_selection(graph, ignored_names=(), quantize_weights=True, quantize_activations=True):
    """caffe-0.17 EnableQuantizationForSelectedLayers: for each layer, (weights quantized?,
    indices of the tops quantized)."""
    out = []
    ignored = set(ignored_names)
    for i, t in enumerate(graph.types):
        nxt = graph.type_of(graph.next_id(i))
        prev_id = graph.prev_id(i)
        prv = graph.type_of(prev_id)
        prv2 = graph.type_of(graph.prev_id(prev_id)) if prev_id is not None else ""
        merged = False
        if t in WEIGHTED:
            merged = nxt in ("BatchNorm", "Scale", "ReLU")
        elif t == "BatchNorm":
            merged = nxt in ("Scale", "ReLU") or (nxt == "Convolution" and prv != "Convolution")
        elif t == "Scale":
            merged = nxt == "ReLU" or (nxt == "Convolution" and "Convolution" not in (prv, prv2))
        is_data = "data" in t.lower()
        selected = (t in QC_TYPES or is_data) and graph.names[i] not in ignored
        weights = bool(quantize_weights and selected and t in WEIGHTED)
        tops = []
        if quantize_activations and selected and not merged:
            tops = list(range(min(1, len(graph.tops[i])) if is_data else len(graph.tops[i])))
        out.append((weights, tops))
    return out


def adjacency_selection(types):
    """caffe-0.15 / 0.16-head AddQuantizationParams, by list order: for each layer
    (gets a quantization_param, weights quantized, outputs quantized)."""
    out = []
    n = len(types)
    for i, t in enumerate(types):
        nxt = types[i + 1] if i + 1 < n else None
        has, weights, outs = False, False, False
        if t in ("Convolution", "InnerProduct"):
            has, weights = True, True
            outs = nxt is not None and nxt not in ("ReLU", "BatchNorm")
        elif t == "BatchNorm":
            has = True
            outs = nxt is not None and nxt not in ("Convolution", "InnerProduct", "ReLU",
                                                   "Scale")
        elif t in ("ReLU", "Scale", "Pooling", "Concat"):
            has = outs = True
        elif t == "Eltwise":
            has = outs = nxt is not None and nxt != "ReLU"
        elif t == "Deconvolution":
            has = weights = outs = True
        out.append((has, weights, outs))
    return out


# --- writing QParams ---------------------------------------------------------------------
def fill_qparams(msg, qs, quantize, vintage):
    """Write a QScale into a QuantizationParameter.QParams message (0.17 or 0.16 fields)."""
    msg.quantize = bool(quantize)
    msg.bitwidth = qs.bitwidth
    msg.unsigned_data = qs.unsigned_data
    msg.unsigned_quant = qs.unsigned_quant
    msg.min, msg.max = qs.min, qs.max
    msg.offset = qs.offset
    if vintage == "0.16":
        msg.fracbits, msg.scale = qs.fracbits, qs.scale
    else:
        msg.fracbits, msg.shiftbits, msg.scale_target = 0, qs.shiftbits, qs.scale


def _qparams_at(repeated, k):
    while len(repeated) <= k:
        repeated.add()
    return repeated[k]


# --- the net-level flow (Q-B / Q-C) --------------------------------------------------------
class NetQuantizer(NetHook):
    """caffe-jacinto 0.16-head / 0.17 quantization of one net (see the module docstring)."""

    def __init__(self, nq, vintage):
        self.nq = caffe_pb2.NetQuantizationParameter()
        self.nq.CopyFrom(nq)
        self.vintage = vintage
        self.infer_count = 0
        self._open = False
        self.net = None

    # setup
    def attach(self, net):
        self.net = net
        nq = self.nq
        self.graph = g = Graph.of(net)
        self.phase_rounding = fp.STOCHASTIC if net.phase == TRAIN else int(nq.rounding_scheme)
        if self.vintage == "0.16":
            rows = adjacency_selection(g.types)
            self.has_param = [has and (nq.quantize_activations or (w and nq.quantize_weights))
                              for has, w, _ in rows]
            self.quant_weights = [[0] if (w and nq.quantize_weights and net.layers[i].blobs)
                                  else [] for i, (_, w, _) in enumerate(rows)]
            self.quant_tops = [list(range(len(g.tops[i])))
                               if (o and nq.quantize_activations and g.types[i] in QB_APPLIED)
                               else [] for i, (_, _, o) in enumerate(rows)]
            self.out_flag = [o for _, _, o in rows]
            self.w_flag = [w for _, w, _ in rows]
        else:
            rows = qc_selection(g, nq.ignored_layer_names, nq.quantize_weights,
                                nq.quantize_activations)
            self.has_param = [True] * len(g)
            self.quant_weights = [list(range(len(net.layers[i].blobs))) if w else []
                                  for i, (w, _) in enumerate(rows)]
            self.quant_tops = [tops for _, tops in rows]
        if int(nq.precision) == QP.FLOAT:
            self.quant_weights = [[] for _ in g.types]
            self.quant_tops = [[] for _ in g.types]
        # running ranges, one float32 slot per (layer, bottom) and (layer, top or the
        # layer's one 0.16 output range); weights are exact
        self.in_slots = [(i, k, b) for i in range(len(g)) for k, b in enumerate(g.bottoms[i])]
        if self.vintage == "0.16":
            self.out_slots = [(i, 0, None) for i in range(len(g)) if g.tops[i]]
        else:
            self.out_slots = [(i, k, b) for i in range(len(g)) for k, b in enumerate(g.tops[i])]
        self.in_range = np.zeros((len(self.in_slots), 2), np.float32)
        self.out_range = np.zeros((len(self.out_slots), 2), np.float32)
        self.in_index = {(i, k): s for s, (i, k, _) in enumerate(self.in_slots)}
        self.out_index = {(i, k): s for s, (i, k, _) in enumerate(self.out_slots)}
        self.w_range = [np.zeros((len(layer.blobs), 2), np.float32) for layer in net.layers]
        self.plan = [None] * len(g)

    @property
    def quantizing(self):
        return self.infer_count >= self.nq.quantization_start

    # the pass
    def before_forward(self, net):
        if self._open:
            self._finish(net)
        self._open = True
        if not self.quantizing:
            return
        if self.infer_count == self.nq.quantization_start:
            self._announce()
        self.plan = [self._layer_plan(i) for i in range(len(self.graph))]
        if self.infer_count == self.nq.quantization_start:
            self.write_params()

    def after_layer(self, net, layer_id):
        plan = self.plan[layer_id] if self.quantizing else None
        if plan is not None:
            rng = common.rng()
            weights, outs = plan
            blobs = net.layers[layer_id].blobs
            for k, qs in weights:
                data = blobs[k].data
                fp.fake_quantize(data, qs, clip=k == 0, rounding=self.phase_rounding, rng=rng,
                                 out=data)
            tops = net._layer_records[layer_id].tops
            for k, qs in outs:
                data = tops[k].data
                fp.fake_quantize(data, qs, clip=True, rounding=self.phase_rounding, rng=rng,
                                 out=data)
        if layer_id == len(self.graph) - 1:
            self._finish(net)

    def _finish(self, net):
        self._open = False
        n = self.nq.display_quantization
        if self.quantizing and n > 0 and self.infer_count % n == 0:
            self.write_params()          # the formats this pass used, as TI displays them
            self.display()
        self._update_ranges(net)
        self.infer_count += 1

    # ranges
    def _update_ranges(self, net):
        g = self.graph
        recs = net._layer_records
        samples = {}                 # one min/max per blob, however many layers read it

        def sample(blob_id, blob):
            if blob_id not in samples:
                samples[blob_id] = fp.blob_range(blob.data)
            return samples[blob_id]

        in_sample = np.array([sample(b, recs[i].bottoms[k]) for i, k, b in self.in_slots],
                             np.float32).reshape(-1, 2)
        if self.vintage == "0.16":
            rows = []
            for i, _, _ in self.out_slots:
                lo, hi = _FLT_MAX, _FLT_MIN
                for k, b in enumerate(g.tops[i]):   # TI keeps the last top's max (sic)
                    t_lo, t_hi = sample(b, recs[i].tops[k])
                    lo = min(lo, t_lo)
                    hi = max(lo, t_hi)
                rows.append((lo, hi))
            out_sample = np.array(rows, np.float32).reshape(-1, 2)
            warming = self.infer_count <= self.nq.quantization_start
            p2 = self.nq.power2_range
            self.in_range = fp.qb_range_update(self.in_range, in_sample, warming, p2)
            self.out_range = fp.qb_range_update(self.out_range, out_sample, warming, p2)
        else:
            out_sample = np.array([sample(b, recs[i].tops[k]) for i, k, b in self.out_slots],
                                  np.float32).reshape(-1, 2)
            first = self.infer_count == 0
            args = (first, self.nq.range_update_factor, self.nq.range_expansion_factor)
            self.in_range = fp.qc_range_update(self.in_range, in_sample, *args)
            self.out_range = fp.qc_range_update(self.out_range, out_sample, *args)
        for i, layer in enumerate(net.layers):
            blobs = layer.blobs[:1] if self.vintage == "0.16" else layer.blobs
            for k, blob in enumerate(blobs):
                self.w_range[i][k] = fp.blob_range(blob.data)

    # scales
    def weight_scale(self, i, k):
        nq = self.nq
        lo, hi = self.w_range[i][k]
        if self.vintage == "0.16":
            return fp.estimate_qscale(lo, hi, nq.bitwidth_weights, nq.power2_range,
                                      nq.apply_offset_weights)
        bits = nq.bitwidth_bias if (k > 0 or self.graph.types[i] == "BatchNorm") \
            else nq.bitwidth_weights
        return fp.estimate_qscale(lo, hi, bits, nq.power2_scale_weights, nq.apply_offset_weights)

    def activation_scale(self, row):
        nq = self.nq
        power2 = nq.power2_range if self.vintage == "0.16" else nq.power2_scale_activations
        return fp.estimate_qscale(row[0], row[1], nq.bitwidth_activations, power2,
                                  nq.apply_offset_activations)

    def in_scale(self, i, k):
        return self.activation_scale(self.in_range[self.in_index[(i, k)]])

    def out_scale(self, i, k):
        k = 0 if self.vintage == "0.16" else k
        return self.activation_scale(self.out_range[self.out_index[(i, k)]])

    def _layer_plan(self, i):
        weights = []
        if self.infer_count == self.nq.quantization_start:
            weights = [(k, self.weight_scale(i, k)) for k in self.quant_weights[i]]
        outs = [(k, self.out_scale(i, k)) for k in self.quant_tops[i]]
        return (weights, outs) if (weights or outs) else None

    # reporting
    def _announce(self):
        if self.vintage == "0.16":
            LOG.info("Adding quantization params at infer/iter index: %d", self.infer_count)
            return
        LOG.info("Enabling quantization flag in quantization_param at infer/iter index: %d",
                 self.infer_count)
        for i, tops in enumerate(self.quant_tops):
            if tops:
                LOG.info("Enabling quantization at output of: %s %s", self.graph.types[i],
                         self.graph.names[i])

    def write_params(self):
        """Fill every layer's LayerParameter.quantization_param, as TI's
        SetQuantizationParams does (0.17: every layer; 0.16: the selected ones)."""
        if self.net is None or not self.quantizing:
            return
        nq, g = self.nq, self.graph
        rounding = self.phase_rounding
        for i, layer in enumerate(self.net.layers):
            if not self.has_param[i]:
                continue
            qp = layer.param.quantization_param
            qp.precision = nq.precision
            qp.rounding_scheme = rounding
            qp.quantized_infer_count = self.infer_count - nq.quantization_start
            if self.vintage == "0.16":
                qp.power2_range = nq.power2_range
            else:
                qp.power2_scale_weights = nq.power2_scale_weights
                qp.power2_scale_activations = nq.power2_scale_activations
            n_w = 1 if self.vintage == "0.16" else len(layer.blobs)
            for k in range(min(n_w, len(layer.blobs))):
                quantized = (k in self.quant_weights[i]) if self.vintage != "0.16" \
                    else self.w_flag[i] and nq.quantize_weights
                fill_qparams(_qparams_at(qp.qparam_w, k), self.weight_scale(i, k), quantized,
                             self.vintage)
            for k in range(len(g.bottoms[i])):
                fill_qparams(_qparams_at(qp.qparam_in, k), self.in_scale(i, k), False,
                             self.vintage)
            n_out = min(1, len(g.tops[i])) if self.vintage == "0.16" else len(g.tops[i])
            for k in range(n_out):
                quantized = (self.out_flag[i] and nq.quantize_activations) \
                    if self.vintage == "0.16" else k in self.quant_tops[i]
                fill_qparams(_qparams_at(qp.qparam_out, k), self.out_scale(i, k), quantized,
                             self.vintage)
            if self.vintage == "0.16" and n_out and len(g.bottoms[i]):
                # TI avoids a left shift at the output: fracbits_out <= in + weights
                w_frac = qp.qparam_w[0].fracbits if len(qp.qparam_w) else 0
                limit = qp.qparam_in[0].fracbits + w_frac
                if limit < qp.qparam_out[0].fracbits:
                    qp.qparam_out[0].fracbits = limit

    def display(self):
        """TI's DisplayQuantizationParams lines."""
        phase = "Train" if self.net.phase == TRAIN else "Test"
        LOG.info("Quantizing the net: %s %s", self.net.name, phase)
        scale_field = "scale" if self.vintage == "0.16" else "scale_target"
        nq = self.nq
        for i, layer in enumerate(self.net.layers):
            if not self.has_param[i]:
                continue
            qp, name = layer.param.quantization_param, self.graph.names[i]
            rows = []
            if nq.quantize_weights and len(qp.qparam_w) and qp.qparam_w[0].quantize:
                rows.append(("Q weights", qp.qparam_w[0]))
                if len(qp.qparam_w) > 1 and qp.qparam_w[1].quantize:
                    rows.append(("Q bias", qp.qparam_w[1]))
            if nq.quantize_activations and len(qp.qparam_out) and qp.qparam_out[0].quantize:
                rows.append(("Q output", qp.qparam_out[0]))
            for what, q in rows:
                LOG.info(" %s:%d Name:%s bitwidth:%d fracbits:%d scale:%s offset:%s "
                         "unsigned_data:%s min:%s max:%s", what, i, name, q.bitwidth,
                         q.fracbits, _fmt(getattr(q, scale_field)), _fmt(q.offset),
                         _fmt(q.unsigned_data), _fmt(q.min), _fmt(q.max))


def _net_vintage(nq):
    return "0.16" if (nq.HasField("power2_range")
                      or nq.HasField("insert_quantization_param")) else "0.17"


def net_chooses_formats(net_param):
    """Whether a net's own quantizer measures ranges and chooses every layer's formats:
    `quantize: true` with quantization_start > 0 (as TI requires) and, in 0.16,
    insert_quantization_param, in 0.17 update_quantization_param. Otherwise TI applies only
    the formats that the prototxt gives its layers (layer_qparams.py)."""
    if not net_param.quantize:
        return False
    nq = net_param.net_quantization_param
    _check_precision(nq.precision, "net_quantization_param.precision")
    if nq.quantization_start <= 0:
        return False
    if _net_vintage(nq) == "0.16":
        return nq.insert_quantization_param
    return nq.update_quantization_param


@net_hook_factory
def make_net_quantizer(net_param):
    """NetParameter `quantize: true`, when the net chooses its formats itself."""
    if not net_chooses_formats(net_param):
        return None
    nq = net_param.net_quantization_param
    return NetQuantizer(nq, _net_vintage(nq))


def write_quantization_params(net):
    """Bring the net's LayerParameter.quantization_param up to date (net-level flow)."""
    for hook in getattr(net, "forward_hooks", ()):
        if isinstance(hook, NetQuantizer):
            hook.write_params()


def _check_precision(precision, field):
    if int(precision) not in (QP.FLOAT, QP.DYNAMIC_FIXED_POINT):
        raise CaffeError(f"{field}: {QP.Precision.Name(int(precision))} is not implemented "
                         f"(DYNAMIC_FIXED_POINT and FLOAT are)")


# --- the solver-level flow (Q-A) -----------------------------------------------------------
class QuantizedWeights:
    """One layer's Layer.param_transform: the fixed-point copy of each blob that has a format
    ({blob index: QScale}), the weight clamped and the bias not (as TI), made once per forward
    pass and reused by the backward; a blob without a format stays float."""

    def __init__(self, owner, qscales):
        self.owner, self.qscales = owner, dict(qscales)
        self.buffers = {}

    def __call__(self, index, w):
        qscale = self.qscales.get(index)
        if qscale is None:
            return w
        generation = self.owner.generation
        buf, made = self.buffers.get(index, (None, -1))
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            buf = np.empty_like(w)
        elif made == generation:
            return buf
        fp.fake_quantize(w, qscale, clip=index == 0, rounding=self.owner.rounding,
                         rng=common.rng(), out=buf)
        self.buffers[index] = (buf, generation)
        return buf


class NetFixedPoint(NetHook):
    """Fixed formats in one net: rounds the tops of the layers in `outputs` ({layer id: one
    QScale or None per top}) after their forward; `generation` counts passes so that
    QuantizedWeights rounds the weights once per pass."""

    def __init__(self, rounding):
        self.rounding = rounding
        self.generation = 0
        self.outputs = {}

    def before_forward(self, net):
        self.generation += 1

    def after_layer(self, net, layer_id):
        formats = self.outputs.get(layer_id)
        if formats is None:
            return
        rng = common.rng()
        for top, qs in zip(net._layer_records[layer_id].tops, formats):
            if qs is not None:
                fp.fake_quantize(top.data, qs, clip=True, rounding=self.rounding, rng=rng,
                                 out=top.data)

    def release(self, net):
        """Stop: no more rounding of tops, and the weights this hook rounds are float again."""
        self.outputs = {}
        for layer in net.layers:
            if getattr(layer.param_transform, "owner", None) is self:
                layer.param_transform = None


class LayerRanges:
    """Q-A's running ranges of one layer: inputs (per bottom), output, weights."""

    def __init__(self, n_in):
        self.lo_in, self.hi_in = [0.0] * n_in, [0.0] * n_in
        self.lo_out = self.hi_out = 0.0
        self.lo_w = self.hi_w = 0.0

    def to_json(self):
        return {"in": [list(self.lo_in), list(self.hi_in)], "out": [self.lo_out, self.hi_out],
                "w": [self.lo_w, self.hi_w]}

    @classmethod
    def from_json(cls, data):
        r = cls(len(data["in"][0]))
        r.lo_in, r.hi_in = [float(v) for v in data["in"][0]], [float(v) for v in data["in"][1]]
        r.lo_out, r.hi_out = (float(v) for v in data["out"])
        r.lo_w, r.hi_w = (float(v) for v in data["w"])
        return r

    @classmethod
    def from_param(cls, n_in, qp):
        """TI's CopyQuantizationRangeInLayers: a prototxt's saved ranges seed the averages."""
        r = cls(n_in)
        for k in range(min(n_in, len(qp.min_layer_in))):
            r.lo_in[k] = float(qp.min_layer_in[k])
        for k in range(min(n_in, len(qp.max_layer_in))):
            r.hi_in[k] = float(qp.max_layer_in[k])
        r.lo_out, r.hi_out = float(qp.min_layer_out), float(qp.max_layer_out)
        r.lo_w, r.hi_w = float(qp.min_layer_weights), float(qp.max_layer_weights)
        return r


def qa_widths(ranges, bw_in, bw_out, bw_w, unsigned_check_in, unsigned_check_out):
    """A layer's Q-A formats from its ranges: {'in': [(fl, unsigned)], 'out': (fl, unsigned),
    'w': fl} (TI's SetTrainQuantizationParamsLayer*)."""
    ins = []
    for lo, hi in zip(ranges.lo_in, ranges.hi_in):
        il, uns = fp.qa_activation_length(lo, hi, unsigned_check_in)
        ins.append((bw_in - il, uns))
    il, uns = fp.qa_activation_length(ranges.lo_out, ranges.hi_out, unsigned_check_out)
    return {"in": ins, "out": (bw_out - il, uns), "w": bw_w - fp.qa_weight_length(ranges.hi_w)}


class SolverQuantizer(ParamHook):
    """caffe-jacinto G1/G2 solver-level quantization (see the module docstring)."""

    state_key = "jacinto_quantization"

    def __init__(self, sp):
        qp = sp.quantization_param
        self.start_iter = int(sp.quantization_start_iter)
        self.bw_in, self.bw_out, self.bw_w = int(qp.bw_layer_in), int(qp.bw_layer_out), \
            int(qp.bw_weights)
        self.unsigned_in, self.unsigned_out = bool(sp.unsigned_check_in), \
            bool(sp.unsigned_check_out)
        self.do_weights, self.do_activations = bool(sp.quantize_weights), \
            bool(sp.quantize_activations)
        self.display_every = int(sp.display_quantization)
        self.precision = int(qp.precision)
        self.test_rounding = int(qp.rounding_scheme)
        self.ranges = {}             # train-net layer name -> LayerRanges
        self.widths = None           # layer name -> qa_widths(), once quantizing
        self.nets = []
        self._net_hooks = []

    # state
    def get_state(self):
        return {"ranges": {name: r.to_json() for name, r in self.ranges.items()},
                "widths": self.widths}

    def set_state(self, state):
        self.ranges = {name: LayerRanges.from_json(r)
                       for name, r in (state or {}).get("ranges", {}).items()}
        widths = (state or {}).get("widths")
        self.widths = None if widths is None else {
            name: {"in": [tuple(v) for v in w["in"]], "out": tuple(w["out"]), "w": w["w"]}
            for name, w in widths.items()}

    # solver events
    def start(self, params, it, nets):
        self.nets = list(nets)
        train = self.nets[0]
        self.selection = [adjacency_selection([layer.type for layer in net.layers])
                          for net in self.nets]
        for i, layer in enumerate(train.layers):
            name = train.layer_names[i]
            if name not in self.ranges:
                self.ranges[name] = LayerRanges.from_param(len(train.bottom_vecs[i]),
                                                           layer.param.quantization_param)
        for net in self.nets:
            rounding = fp.STOCHASTIC if net.phase == TRAIN else self.test_rounding
            self._net_hooks.append(net.add_forward_hook(NetFixedPoint(rounding)))
        if it >= self.start_iter:
            self._activate(keep_widths=True)

    def after_step(self, params, it):
        for hook in self._net_hooks:
            hook.generation += 1     # the weights changed: round them again
        if it < self.start_iter:
            self._update_ranges()
        if it + 1 == self.start_iter:
            self._activate(keep_widths=False)
        elif it >= self.start_iter and self.display_every > 0 \
                and it % self.display_every == 0:
            self.display()

    # ranges and formats
    def _update_ranges(self):
        net = self.nets[0]
        samples = {}

        def sample(blob):
            key = id(blob)
            if key not in samples:
                samples[key] = fp.blob_range(blob.data)
            return samples[key]

        for i, layer in enumerate(net.layers):
            r = self.ranges[net.layer_names[i]]
            for k, blob in enumerate(net.bottom_vecs[i]):
                lo, hi = sample(blob)
                r.lo_in[k] = float(fp.qa_range_update(r.lo_in[k], lo))
                r.hi_in[k] = float(fp.qa_range_update(r.hi_in[k], hi))
            if net.top_vecs[i]:
                lo, hi = _FLT_MAX, _FLT_MIN
                for blob in net.top_vecs[i]:   # TI keeps the last top's max (sic)
                    t_lo, t_hi = sample(blob)
                    lo = min(lo, t_lo)
                    hi = max(lo, t_hi)
                r.lo_out = float(fp.qa_range_update(r.lo_out, lo))
                r.hi_out = float(fp.qa_range_update(r.hi_out, hi))
            if layer.blobs:
                lo, hi = fp.blob_range(layer.blobs[0].data)
                r.lo_w = float(fp.qa_range_update(r.lo_w, min(_FLT_MAX, lo)))
                r.hi_w = float(fp.qa_range_update(r.hi_w, max(_FLT_MIN, hi)))

    def _activate(self, keep_widths):
        train = self.nets[0]
        if not (keep_widths and self.widths is not None):
            self.widths = {}
            for i, (has, _, _) in enumerate(self.selection[0]):
                if has:
                    name = train.layer_names[i]
                    self.widths[name] = qa_widths(self.ranges[name], self.bw_in, self.bw_out,
                                                  self.bw_w, self.unsigned_in,
                                                  self.unsigned_out)
        if self.precision == QP.FLOAT:
            return
        LOG.info("Quantization starts at iteration %d: %d-bit weights, %d-bit inputs, "
                 "%d-bit outputs", self.start_iter, self.bw_w, self.bw_in, self.bw_out)
        self._fill_layer_params(train)
        for net, rows, hook in zip(self.nets, self.selection, self._net_hooks):
            for other in net.forward_hooks:
                if getattr(other, "from_prototxt", False):
                    other.release(net)   # the formats the solver chose replace the file's
            hook.outputs = {}
            for i, (_, weights, outs) in enumerate(rows):
                w = self.widths.get(net.layer_names[i])
                if w is None:
                    continue
                layer = net.layers[i]
                if weights and self.do_weights and layer.blobs:
                    qs = fp.qa_scale(self.bw_w, w["w"], False)
                    layer.param_transform = QuantizedWeights(
                        hook, {k: qs for k in range(len(layer.blobs))})
                if outs and self.do_activations:
                    qs = fp.qa_scale(self.bw_out, w["out"][0], w["out"][1])
                    hook.outputs[i] = [qs] * len(net.top_vecs[i])

    def _fill_layer_params(self, net):
        for i, (has, weights, outs) in enumerate(self.selection[0]):
            if not has:
                continue
            layer, name = net.layers[i], net.layer_names[i]
            r, w = self.ranges[name], self.widths[name]
            qp = layer.param.quantization_param
            qp.precision = self.precision
            qp.rounding_scheme = QP.STOCHASTIC
            qp.quantize_layer_weights = bool(weights and self.do_weights)
            qp.quantize_layer_out = bool(outs and self.do_activations)
            if layer.blobs:
                qp.bw_weights, qp.fl_weights = self.bw_w, w["w"]
                qp.min_layer_weights, qp.max_layer_weights = r.lo_w, r.hi_w
            qp.bw_layer_in = self.bw_in
            del qp.fl_layer_in[:], qp.unsigned_layer_in[:]
            del qp.min_layer_in[:], qp.max_layer_in[:]
            for k, (fl, uns) in enumerate(w["in"]):
                qp.fl_layer_in.append(fl)
                if self.unsigned_in:
                    qp.unsigned_layer_in.append(uns)
                qp.min_layer_in.append(r.lo_in[k])
                qp.max_layer_in.append(r.hi_in[k])
            qp.bw_layer_out, qp.fl_layer_out = self.bw_out, w["out"][0]
            if self.unsigned_out:
                qp.unsigned_layer_out = w["out"][1]
            qp.min_layer_out, qp.max_layer_out = r.lo_out, r.hi_out
            self._check_qformat(net, i, qp)

    def _check_qformat(self, net, i, qp):
        """TI's "Qformat error": a Conv (or the ReLU after one) whose output would need more
        fractional bits than its input and weights give."""
        if not qp.quantize_layer_out:
            return
        t = net.layers[i].type
        source = None
        if t in ("Convolution", "Deconvolution"):
            source = qp
        elif t == "ReLU" and i > 0 and net.layers[i - 1].type == "Convolution":
            source = net.layers[i - 1].param.quantization_param
        if source is None or not len(source.fl_layer_in):
            return
        if source.fl_layer_in[0] + source.fl_weights < qp.fl_layer_out:
            LOG.warning("Qformat error for layer: %s  fl_in:%d fl_weights:%d fl_out:%d "
                        "(TI stops here; caffe-lite goes on)", net.layer_names[i],
                        source.fl_layer_in[0], source.fl_weights, qp.fl_layer_out)

    def display(self):
        """TI's Net::DisplayQuantizationParams (Q-A form)."""
        net = self.nets[0]
        LOG.info("Quantizing the net: %s Train", net.name)
        for i, layer in enumerate(net.layers):
            if not layer.param.HasField("quantization_param"):
                continue
            qp, name = layer.param.quantization_param, net.layer_names[i]
            if self.do_weights and qp.quantize_layer_weights:
                LOG.info(" Q params:%d Name:%s bw_weights:%d fl_weights:%d min_weights:%s "
                         "max_weights:%s", i, name, qp.bw_weights, qp.fl_weights,
                         _fmt(qp.min_layer_weights), _fmt(qp.max_layer_weights))
            if self.do_activations and qp.quantize_layer_out:
                LOG.info(" Q output:%d Name:%s bw_out:%d fl_out:%d min_out:%s max_out:%s "
                         "unsigned_out:%s", i, name, qp.bw_layer_out, qp.fl_layer_out,
                         _fmt(qp.min_layer_out), _fmt(qp.max_layer_out),
                         _fmt(qp.unsigned_layer_out))


@hook_factory
def make_solver_quantizer(solver_param):
    """SolverParameter `insert_quantization_param: true` (caffe-0.15 / rc0.16.1)."""
    if not solver_param.insert_quantization_param:
        return None
    _check_precision(solver_param.quantization_param.precision, "quantization_param.precision")
    if solver_param.quantization_start_iter <= 0:
        return None
    return SolverQuantizer(solver_param)
