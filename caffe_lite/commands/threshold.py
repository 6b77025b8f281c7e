"""`caffe-lite threshold`: caffe-jacinto's offline sparsification (tools/caffe.cpp threshold()).

    caffe-lite threshold -model M -weights W -output OUT [-threshold_fraction_low 0.40]
        [-threshold_fraction_mid 0.80] [-threshold_fraction_high 0.90]
        [-threshold_value_maxratio 1e-3] [-threshold_value_max 1e-4]
        [-threshold_step_factor 1e-8] [-vintage 0.16] [-gpu ids] [-strict]

Builds the net in TEST, loads the weights and runs the layer-wise thresholder
(compress/sparsity.py, TI's FindAndApplyThresholdNet) on the weight of every Convolution:
one threshold per layer, the largest whose zero fraction (|w| <= t) stays within the
layer's target (high if ni >= 256 and no >= 512, mid if both >= 32, else low), capped at
min(value_max, maxratio * max |w|). Logs each layer's threshold and zero fraction, the
fraction of zero weights of every Convolution and InnerProduct and the totals, then writes
<dir(OUT)>/<stem(OUT)>.prototxt (the net, no blobs) and <dir(OUT)>/<stem(OUT)>.caffemodel.

The command exists in caffe-jacinto 0.15 and 0.16 (0.17 dropped it). Eligibility follows
0.16 by default: ni >= 32 or no >= 32, and group < num_output (a depthwise conv is left
alone); `-vintage 0.15` drops the group rule. TI writes next to "/" when OUT has no folder
and, in 0.16, puts the weights into the .prototxt too; we write into the current folder and
keep the text file free of blobs (0.15's form), both files atomically.
"""
import os

from google.protobuf import text_format

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..common import TEST
from ..compress import sparsity
from ..compress.jacinto_sparsity import log_sparsity
from ..errors import CaffeError
from ..io.atomic import atomic_write
from ..io.binary import write_binary
from ..log import LOG
from .netflags import STRICT_FLAG, output_prefix, strict_fork_fields, warn_gpu

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "The trained weights to threshold (caffemodel)."),
    Flag("output", "", str, "Where to write: <dir>/<stem>.prototxt and .caffemodel."),
    Flag("threshold_fraction_low", 0.40, float, "Optional: fraction of weights to be zeroed "
                                                "in a small layer (ni or no < 32)."),
    Flag("threshold_fraction_mid", 0.80, float, "Optional: fraction of weights to be zeroed "
                                                "when ni >= 32 and no >= 32."),
    Flag("threshold_fraction_high", 0.90, float, "Optional: fraction of weights to be zeroed "
                                                 "when ni >= 256 and no >= 512."),
    Flag("threshold_value_maxratio", 1e-3, float, "Optional: cap on the threshold, as a "
                                                  "fraction of the layer's max |w|."),
    Flag("threshold_value_max", 1e-4, float, "Optional: cap on the threshold value."),
    Flag("threshold_step_factor", 1e-8, float, "Optional: search step, as a fraction of the "
                                               "layer's max |w|."),
    Flag("vintage", "0.16", str, "Optional: caffe-jacinto version whose eligibility rules "
                                 "to follow: 0.16 (group < num_output) or 0.15."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    STRICT_FLAG,
]


@command("threshold", "zero the small weights of a model's convolutions (caffe-jacinto)",
         "-model MODEL -weights WEIGHTS -output OUT [flags]")
def threshold(argv):
    values, positional = parse_flags(argv, FLAGS)
    with strict_fork_fields(values["strict"]):
        return _threshold(values, positional)


def _threshold(values, positional):
    if positional:
        raise unexpected_argument(positional, 0)
    for flag, what in (("model", "a model definition"), ("weights", "model weights"),
                       ("output", "an output path")):
        if not values[flag]:
            raise CaffeError(f"Need {what} to threshold (-{flag}).")
    rules = sparsity.eligibility("layer", values["vintage"])
    prefix = output_prefix(values["output"])
    if not os.path.isdir(os.path.dirname(prefix)):
        raise CaffeError("-output: no such directory", os.path.dirname(prefix))
    warn_gpu(values["gpu"])
    LOG.info("Use CPU.")
    from ..net import Net
    net = Net(values["model"], phase=TEST)
    net.copy_from(values["weights"])
    LOG.info("Thresholding Net %s", values["model"])
    threshold_net(net, values, rules)
    _write(net, prefix)
    return 0


def threshold_net(net, values, rules):
    """Threshold every eligible Convolution of `net` in place and log what was done."""
    fractions = (values["threshold_fraction_low"], values["threshold_fraction_mid"],
                 values["threshold_fraction_high"])
    done_ids = set()
    zeros = count = 0
    for name, layer in zip(net.layer_names, net.layers):
        if layer.type != "Convolution" or not layer.blobs:
            continue
        w = layer.blobs[0].data
        if id(w) in done_ids:   # a weight shared with a layer already thresholded
            continue
        done_ids.add(id(w))
        done, reason = sparsity.threshold_conv(
            w, layer.param.convolution_param.group, fractions,
            values["threshold_value_maxratio"], values["threshold_value_max"],
            values["threshold_step_factor"], rules, channel_wise=False, out=w)
        shape = sparsity.conv_shape(w.shape, layer.param.convolution_param.group)
        if done is None:
            LOG.info("%s: ni=%d no=%d: left alone (%s)", name, shape.ni, shape.no, reason)
            continue
        LOG.info("%s: ni=%d no=%d fraction=%g MaxAbsWeight=%g MaxThreshold=%g "
                 "SelectedThreshold=%g ZeroWeightsFraction=%g", name, shape.ni, shape.no,
                 done.fraction, done.max_abs,
                 min(values["threshold_value_max"],
                     done.max_abs * values["threshold_value_maxratio"]),
                 done.thresholds[0], done.zero_fraction)
        zeros += sparsity.zero_count(w)
        count += w.size
    LOG.info("Thresholded convolutions: sparsity = %g (%d/%d)",
             (zeros / count) if count else 0.0, zeros, count)
    entries = [(name, sparsity.zero_count(layer.blobs[0].data), layer.blobs[0].data.size)
               for name, layer in zip(net.layer_names, net.layers)
               if layer.type in ("Convolution", "InnerProduct") and layer.blobs]
    log_sparsity("Sparsity (fraction of zero weights):", entries)


def _write(net, prefix):
    proto = net.to_proto()
    model_path, weights_path = prefix + ".prototxt", prefix + ".caffemodel"
    text = proto.__class__()
    text.CopyFrom(proto)
    for layer in text.layer:
        del layer.blobs[:]
    LOG.info("Snapshotting thresholded prototxt to file %s", model_path)
    atomic_write(model_path, text_format.MessageToString(text).encode("utf-8"))
    LOG.info("Snapshotting thresholded caffemodel to file %s", weights_path)
    write_binary(weights_path, proto)
