"""caffe-jacinto's solver-level quantization (Q-A).

Q-A (caffe-0.15, tidsp.rc0.16.1: `insert_quantization_param: true`,
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

The arithmetic is fixed_point.py, the layer selection quant_selection.adjacency_selection,
and the rounding in the nets fixed_point_hooks.py.

Where we differ from TI, and why:
  * TI rounds the weights in place every forward pass and the update then applies to
    the rounded weights; we keep float shadow weights and round a copy (the standard
    straight-through form; the expected update is the same with stochastic rounding). TI
    quantizes the test nets' weights only (through the shared blobs), not their outputs; we
    quantize both, so the test score during training is the fixed-point one. TI parses
    quantize_weights / quantize_activations but only its display reads them; we honour them
    as documented. TI stops with "Qformat error" when fl_in + fl_weights < fl_out; we warn.
  * Only DYNAMIC_FIXED_POINT (and FLOAT: off) precision; MINIFLOAT and
    INTEGER_POWER_OF_2_WEIGHTS raise an error.
"""
from ..log import LOG
from ..proto import caffe_pb2
from ..solvers.hooks import ParamHook, hook_factory
from . import fixed_point as fp
from .fixed_point_hooks import NetFixedPoint, QuantizedWeights
from .jacinto_quantize import check_precision, fmt_value
from .quant_selection import adjacency_selection

QP = caffe_pb2.QuantizationParameter
TRAIN = caffe_pb2.TRAIN


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
                lo, hi = fp.FLT_MAX, fp.FLT_MIN
                for blob in net.top_vecs[i]:   # TI keeps the last top's max (sic)
                    t_lo, t_hi = sample(blob)
                    lo = min(lo, t_lo)
                    hi = max(lo, t_hi)
                r.lo_out = float(fp.qa_range_update(r.lo_out, lo))
                r.hi_out = float(fp.qa_range_update(r.hi_out, hi))
            if layer.blobs:
                lo, hi = fp.blob_range(layer.blobs[0].data)
                r.lo_w = float(fp.qa_range_update(r.lo_w, min(fp.FLT_MAX, lo)))
                r.hi_w = float(fp.qa_range_update(r.hi_w, max(fp.FLT_MIN, hi)))

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
                         fmt_value(qp.min_layer_weights), fmt_value(qp.max_layer_weights))
            if self.do_activations and qp.quantize_layer_out:
                LOG.info(" Q output:%d Name:%s bw_out:%d fl_out:%d min_out:%s max_out:%s "
                         "unsigned_out:%s", i, name, qp.bw_layer_out, qp.fl_layer_out,
                         fmt_value(qp.min_layer_out), fmt_value(qp.max_layer_out),
                         fmt_value(qp.unsigned_layer_out))


@hook_factory
def make_solver_quantizer(solver_param):
    """SolverParameter `insert_quantization_param: true` (caffe-0.15 / rc0.16.1)."""
    if not solver_param.insert_quantization_param:
        return None
    check_precision(solver_param.quantization_param.precision, "quantization_param.precision")
    if solver_param.quantization_start_iter <= 0:
        return None
    return SolverQuantizer(solver_param)
