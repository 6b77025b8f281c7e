"""A prototxt's own LayerParameter.quantization_param, applied (caffe-jacinto).

TI's snapshot_log writes each layer's fixed-point formats into the net it logs, and a net
that carries them runs in fixed point under TI: caffe-0.15's layers read the Q-A fields
(`quantize_layer_weights` / `quantize_layer_out` with `bw_*` and `fl_*`), caffe-0.16 head
and 0.17 the `qparam_w` / `qparam_out` entries whose `quantize` is set, when the net does not
choose the formats itself (`update_quantization_param: false`, or no `quantize: true`). This
net hook does the same: after a layer's forward its tops are rounded to the layer's output
formats (clamped), and its weight blobs run through their formats (Layer.param_transform:
the weight clamped, the bias not; float shadow weights while training, as in the solver-level
flow). Rounding is STOCHASTIC in TRAIN and NEAREST in TEST, as the other flows.

Where caffe-lite chooses the formats itself the file's formats stand aside: a net whose own
quantizer runs (jacinto_quantize.net_chooses_formats) gets no such hook, and a solver with
`insert_quantization_param` (jacinto_quantize_solver.py) releases it when its quantization starts (until then the file's
formats apply, as in TI, where the solver overwrites them at that iteration). The formats are
read with snapshot_log.blob_format, the reader of the files TI writes; layer inputs are not
rounded (the layer before rounds them as its output), as in the solver-level flow.
"""
from ..common import TRAIN
from ..errors import CaffeError
from ..net_hooks import net_hook_factory
from ..proto import caffe_pb2
from . import fixed_point as fp
from .fixed_point_hooks import NetFixedPoint, QuantizedWeights
from .jacinto_quantize import net_chooses_formats
from .snapshot_log import blob_format

QP = caffe_pb2.QuantizationParameter


class PrototxtFormats(NetFixedPoint):
    """NetFixedPoint with the formats each layer's quantization_param gives."""

    from_prototxt = True     # jacinto_quantize_solver.SolverQuantizer releases it when it starts

    def attach(self, net):
        self.rounding = fp.STOCHASTIC if net.phase == TRAIN else fp.NEAREST
        for i, layer in enumerate(net.layers):
            lp = layer.param
            if not lp.HasField("quantization_param"):
                continue
            _check_layer_precision(lp)
            weights = {}
            for k in range(len(layer.blobs)):
                fmt = blob_format(lp, "weights", k)
                if fmt is not None:
                    weights[k] = fmt[0]
            if weights:
                layer.param_transform = QuantizedWeights(self, weights)
            tops = [blob_format(lp, "out", k) for k in range(len(net.top_vecs[i]))]
            if any(fmt is not None for fmt in tops):
                self.outputs[i] = [None if fmt is None else fmt[0] for fmt in tops]


def _check_layer_precision(layer_param):
    precision = int(layer_param.quantization_param.precision)
    if precision not in (QP.FLOAT, QP.DYNAMIC_FIXED_POINT):
        raise CaffeError(f"layer '{layer_param.name}': quantization_param.precision "
                         f"{QP.Precision.Name(precision)} is not implemented "
                         f"(DYNAMIC_FIXED_POINT and FLOAT are)")


@net_hook_factory
def make_prototxt_formats(net_param):
    """A hook when some layer has a quantization_param and the net does not choose its own."""
    if not any(layer.HasField("quantization_param") for layer in net_param.layer):
        return None
    if net_chooses_formats(net_param):
        return None
    return PrototxtFormats(fp.NEAREST)
