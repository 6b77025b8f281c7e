"""caffe-jacinto's net-level quantization (Q-B, Q-C) in training and inference.

One of the two forms of the schema (FORK_FIELDS.md 1.4): the solver-level one (Q-A) is
jacinto_quantize_solver.py. The arithmetic is fixed_point.py, the layer selection
quant_selection.py.

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


Where we differ from TI, and why:
  * A pass that stops before the last layer (forward_to) is finished at the start
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
from . import fixed_point as fp
from .quant_selection import QB_APPLIED, Graph, adjacency_selection, qc_selection

QP = caffe_pb2.QuantizationParameter
TRAIN = caffe_pb2.TRAIN


def fmt_value(value):
    """A value as TI's quantization display prints it (a bool as 0 or 1)."""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    return "%g" % value


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
                lo, hi = fp.FLT_MAX, fp.FLT_MIN
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
                         q.fracbits, fmt_value(getattr(q, scale_field)), fmt_value(q.offset),
                         fmt_value(q.unsigned_data), fmt_value(q.min), fmt_value(q.max))


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
    check_precision(nq.precision, "net_quantization_param.precision")
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


def check_precision(precision, field):
    if int(precision) not in (QP.FLOAT, QP.DYNAMIC_FIXED_POINT):
        raise CaffeError(f"{field}: {QP.Precision.Name(int(precision))} is not implemented "
                         f"(DYNAMIC_FIXED_POINT and FLOAT are)")
