"""caffe-jacinto `snapshot_log: true`: a NetLogParameter beside every snapshot.

TI's Solver::Snapshot (caffe-0.15, rc0.16.1) wrote, after the caffemodel and the
solverstate, the same NetLogParameter twice: as text to <prefix>_iter_N.prototxt and as
binary to <prefix>_iter_N.binaryproto (Net::ToProtoLog):
  name     the net's name;
  layer    every layer's LayerParameter without blobs, with the quantization_param the
           solver filled in (bit widths, fractional lengths, ranges);
  blob_log for a layer with snapshot_log_weights: each blob, named "<layer> weight:<j>";
           with snapshot_log_in / _out: each bottom / top as the last forward pass left it,
           named "layer:<layer>, bottom:<k>" / "layer:<layer>, top:<k>". A blob the layer
           quantizes (Q-A quantize_layer_weights / _in / _out) is stored as its integer
           codes round(x * 2^fl), clamped except for a bias, with is_quantized, is_unsigned,
           bw and fl; an ArgMax output as 8-bit unsigned codes, fl 0; others as floats.
caffe-0.16 head and 0.17 keep the field but write nothing. We write TI's two files, with the
same names and content, for every schema: a net-level (Q-B/Q-C) layer's blobs are logged
with its qparams (bw = bitwidth, fl = fracbits in 0.16 or -shiftbits in 0.17, codes
round(x * scale + offset)). Both files are written atomically.
"""
import os

from google.protobuf import text_format

from ..io.atomic import atomic_write
from ..io.blobs import array_to_blob_proto
from ..log import LOG
from ..proto import caffe_pb2
from ..solvers.hooks import ParamHook, hook_factory
from . import fixed_point as fp
from .jacinto_quantize import write_quantization_params

_MODEL_SUFFIXES = (".caffemodel.h5", ".caffemodel")


def log_paths(model_path):
    """(<stem>.prototxt, <stem>.binaryproto) beside a snapshot's caffemodel."""
    path = os.fspath(model_path)
    for suffix in _MODEL_SUFFIXES:
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    return path + ".prototxt", path + ".binaryproto"


def _qa_format(qp, what, index):
    """(QScale, clip) of blob `index` of a layer's inputs / outputs / weights under its Q-A
    quantization_param, or None when the layer does not quantize it."""
    if what == "weights" and qp.quantize_layer_weights:
        return fp.qa_scale(qp.bw_weights, qp.fl_weights, False), index == 0
    if what == "in" and qp.quantize_layer_in and len(qp.fl_layer_in) > index:
        uns = len(qp.unsigned_layer_in) > 0 and qp.unsigned_layer_in[index]
        return fp.qa_scale(qp.bw_layer_in, qp.fl_layer_in[index], uns), True
    if what == "out" and qp.quantize_layer_out:
        return fp.qa_scale(qp.bw_layer_out, qp.fl_layer_out, qp.unsigned_layer_out), True
    return None


def _net_format(qp, what, index):
    """The same for a net-level (0.16 / 0.17) quantization_param."""
    field = {"weights": qp.qparam_w, "in": qp.qparam_in, "out": qp.qparam_out}[what]
    if what == "out" and len(field) == 1:
        index = 0                    # 0.16: one output format for every top
    if len(field) <= index or not field[index].quantize:
        return None
    q = field[index]
    scale = q.scale if q.HasField("scale") else q.scale_target
    fl = q.fracbits if q.HasField("scale") else -q.shiftbits
    qs = fp.QScale(q.bitwidth, scale, q.offset, q.unsigned_data, q.unsigned_quant,
                   -fl, fl)
    return qs, (what != "weights" or index == 0)


def blob_format(layer_param, what, index):
    """(QScale, clip) under which a layer quantizes one of its blobs, or None."""
    if layer_param.type == "ArgMax" and what == "out":
        return fp.QScale(8, 1.0, 0.0, True, True), True
    if not layer_param.HasField("quantization_param"):
        return None
    qp = layer_param.quantization_param
    if qp.precision == caffe_pb2.QuantizationParameter.FLOAT:
        return None
    if len(qp.qparam_w) or len(qp.qparam_in) or len(qp.qparam_out):
        return _net_format(qp, what, index)
    return _qa_format(qp, what, index)


def _log_blob(out, name, array, fmt):
    entry = out.blob_log.add()
    entry.name = name
    if fmt is None:
        entry.blob_data.CopyFrom(array_to_blob_proto(array))
        return
    qs, clip = fmt
    entry.is_quantized = True
    entry.is_unsigned = bool(qs.unsigned_quant)
    entry.bw = qs.bitwidth
    entry.fl = qs.fracbits
    entry.blob_data.CopyFrom(array_to_blob_proto(fp.integer_codes(array, qs, clip)))


def net_log(net):
    """The NetLogParameter of a net (TI's Net::ToProtoLog)."""
    out = caffe_pb2.NetLogParameter(name=net.name)
    for i, layer in enumerate(net.layers):
        lp = out.layer.add()
        lp.CopyFrom(layer.param)
        del lp.blobs[:]
        name = net.layer_names[i]
        if lp.snapshot_log_weights:
            for j, blob in enumerate(layer.blobs):
                _log_blob(out, f"{name} weight:{j}", blob.data, blob_format(lp, "weights", j))
        if lp.snapshot_log_in:
            for k, blob in enumerate(net.bottom_vecs[i]):
                _log_blob(out, f"layer:{name}, bottom:{k}", blob.data,
                          blob_format(lp, "in", k))
        if lp.snapshot_log_out:
            for k, blob in enumerate(net.top_vecs[i]):
                _log_blob(out, f"layer:{name}, top:{k}", blob.data, blob_format(lp, "out", k))
    return out


def write_net_log(net, model_path):
    """Write <stem>.prototxt and <stem>.binaryproto beside `model_path`; returns the paths."""
    write_quantization_params(net)
    log = net_log(net)
    text_path, binary_path = log_paths(model_path)
    LOG.info("Snapshotting to prototxt log file %s", text_path)
    atomic_write(text_path, text_format.MessageToString(log).encode())
    atomic_write(binary_path, log.SerializeToString())
    return text_path, binary_path


class SnapshotLog(ParamHook):
    """Writes the log after each snapshot's caffemodel."""

    def after_snapshot(self, net, model_path, it):
        write_net_log(net, model_path)


@hook_factory
def make_snapshot_log(solver_param):
    return SnapshotLog() if solver_param.snapshot_log else None
