"""`caffe-lite optimize`: caffe-jacinto's BatchNorm folding (tools/caffe.cpp optimize()).

    caffe-lite optimize -model M -weights W -output OUT [-remove_bn] [-gpu ids] [-strict]
    (-output_model OUT, as caffe-jacinto 0.17 spells it, is the same flag)

Builds the net in TEST, loads the weights and folds every BatchNorm whose bottom is the top
of a Convolution read by nothing else, and a Scale after it when the BatchNorm has no scale
and bias of its own, into that Convolution (compress/bn_fold.py has the rules and the
layouts). Logs one line per fold and one per BatchNorm left as it is, with the reason, then
writes <dir(OUT)>/<stem(OUT)>.prototxt (no blobs) and <dir(OUT)>/<stem(OUT)>.caffemodel,
both atomically.

As caffe-jacinto does, the folded layers stay as identities (mean 0, variance 1 - eps,
scale 1, bias 0); `-remove_bn` drops them and the conv writes their top instead. TI
writes Net::ToProto, which holds the inserted Split layers and no `state`; we write the
TEST net as its prototxt gives it (no Split layers, no `state`), which builds the same net.
"""
import os

from google.protobuf import text_format

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..common import TEST
from ..compress.bn_fold import fold_batch_norm
from ..errors import CaffeError
from ..io.atomic import atomic_write
from ..io.binary import write_binary
from ..io.blobs import array_to_blob_proto
from ..io.netstate import filter_net
from ..io.prototxt import read_net_param
from ..log import LOG
from .netflags import STRICT_FLAG, output_prefix, strict_fork_fields, warn_gpu

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "The trained weights to optimize (caffemodel)."),
    Flag("output", "", str, "Where to write: <dir>/<stem>.prototxt and .caffemodel."),
    Flag("output_model", "", str, "The same as -output (caffe-jacinto 0.17's name)."),
    Flag("remove_bn", False, bool, "Optional: remove the folded BatchNorm and Scale layers "
                                   "instead of keeping them as identities."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    STRICT_FLAG,
]


@command("optimize", "fold BatchNorm (and Scale) into the convolutions (caffe-jacinto)",
         "-model MODEL -weights WEIGHTS -output OUT [flags]")
def optimize(argv):
    values, positional = parse_flags(argv, FLAGS)
    with strict_fork_fields(values["strict"]):
        return _optimize(values, positional)


def _output(values):
    output, output_model = values["output"], values["output_model"]
    if output and output_model and output != output_model:
        raise CaffeError("-output and -output_model name different files; give one")
    return output or output_model


def _optimize(values, positional):
    if positional:
        raise unexpected_argument(positional, 0)
    output = _output(values)
    for given, flag, what in ((values["model"], "model", "a model definition"),
                              (values["weights"], "weights", "model weights"),
                              (output, "output", "an output path")):
        if not given:
            raise CaffeError(f"Need {what} to optimize (-{flag}).")
    prefix = output_prefix(output)
    if not os.path.isdir(os.path.dirname(prefix)):
        raise CaffeError("-output: no such directory", os.path.dirname(prefix))
    warn_gpu(values["gpu"])
    LOG.info("Use CPU.")
    from ..net import Net
    param, lines = read_net_param(values["model"], with_lines=True)
    net = Net(param=param, phase=TEST, level=0, source=(values["model"], lines))
    net.copy_from(values["weights"])
    LOG.info("Optimizing Net %s", values["model"])
    test_param = filter_net(param, net.net_param.state, values["model"], lines)
    test_param.ClearField("state")
    blobs = {name: [blob.data for blob in params] for name, params in net.params.items()}
    result = fold_batch_norm(test_param, blobs, remove=values["remove_bn"])
    _log(result, values["remove_bn"])
    _write(result, prefix)
    return 0


def _log(result, remove):
    for fold in result.folds:
        scale = f" (+ Scale {fold.scale})" if fold.scale else ""
        LOG.info("Folded BatchNorm %s%s into Convolution %s", fold.bn, scale, fold.conv)
    for left in result.left:
        LOG.info("Left BatchNorm %s as it is: %s", left.bn, left.reason)
    if not result.folds:
        LOG.info("No BatchNorm was folded.")
    elif not remove:
        LOG.info("The folded BatchNorm and Scale layers stay as identities (mean 0, variance "
                 "1 - eps, scale 1, bias 0), as caffe-jacinto writes them.")
    else:
        for fold in result.folds:
            scale = f" and Scale {fold.scale}" if fold.scale else ""
            LOG.info("Removed BatchNorm %s%s (Convolution %s now writes their top)", fold.bn,
                     scale, fold.conv)


def _write(result, prefix):
    model_path, weights_path = prefix + ".prototxt", prefix + ".caffemodel"
    weights = type(result.param)()
    weights.CopyFrom(result.param)
    for layer in weights.layer:
        for array in result.blobs.get(layer.name, ()):
            array_to_blob_proto(array, out=layer.blobs.add())
    LOG.info("Writing the optimized prototxt to %s", model_path)
    atomic_write(model_path, text_format.MessageToString(result.param).encode("utf-8"))
    LOG.info("Writing the optimized caffemodel to %s", weights_path)
    write_binary(weights_path, weights)
