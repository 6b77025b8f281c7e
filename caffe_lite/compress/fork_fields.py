"""Every fork field of the schema, classified once: honoured, inert, or not implemented yet.

The fork fields are the (message, field) keys of caffe_lite.proto.vintages.VINTAGE_FIELDS.
Fields of the forks' own messages (FORK_MESSAGES: QuantizationParameter, BlockGroupLassoSpec,
CConvolutionParameter, ...) are reached only through a containing fork field, which speaks
for them. Each other fork field sits in exactly one table (tests/test_fork_fields.py checks):

  HONOURED          caffe-lite does what the fork does; the value names the module.
  INERT             no effect on results on a CPU engine; the value says why.
  NOT_IMPLEMENTED   a Pending(plan, inert): the issue that implements it ('#10' caffe-jacinto,
                    '#11' SSL, '#12' DNS/INQ, '#13' DeePhi) or 'not planned: why', and the
                    values that switch the field's own mechanism off, i.e. plain Caffe's
                    behaviour (`sparse_mode: SPARSE_NONE`), and those caffe-lite already
                    honours when it honours only some. Message values are never inert.

check_fork_fields(text, descriptor, path) runs when io.prototxt reads a net or a solver: each
NOT_IMPLEMENTED field the text sets to a value that is not inert gives one warning line,
`path:line: <place> (<fork> <Message.field>) is not implemented in caffe-lite yet (issue #N):
ignored`, once per process for each file, line and field. After set_strict(True) (the
commands' -strict flag) the first one is a CaffeError instead, the same line ending in
`refused in strict mode`.

A fork feature that lands takes its fields out of NOT_IMPLEMENTED in the same commit (into
HONOURED, or narrows them with more inert values), and docs/fork_fields.md follows.
"""
import os
import re
from functools import lru_cache
from typing import NamedTuple

from google.protobuf import message_factory, text_format

from ..errors import CaffeError
from ..io.field_positions import field_occurrences
from ..log import LOG
from ..proto import caffe_pb2
from ..proto.vintages import VINTAGE_FIELDS


class Pending(NamedTuple):
    plan: str          # '#10' ... '#13', or 'not planned: why'
    inert: tuple = ()  # values with which the field does what plain Caffe does


# The fork each vintage of vintages.VINTAGES belongs to, as warnings name it.
FORK_OF_VINTAGE = {
    "jacinto-G1": "caffe-jacinto",
    "jacinto-0.15": "caffe-jacinto",
    "jacinto-rc0.16.1": "caffe-jacinto",
    "jacinto-0.16": "caffe-jacinto",
    "jacinto-0.17": "caffe-jacinto",
    "nvcaffe-0.17": "NVCaffe",
    "ssl-scnn": "SSL",
    "ssl-master": "SSL master",
    "dns-official": "DNS",
    "nnmc": "NNMC",
}

# Messages only the forks have; their fields count through the field that contains them.
FORK_MESSAGES = (
    "QuantizationParameter", "QuantizationParameter.QParams", "NetQuantizationParameter",
    "BlockGroupLassoSpec", "CConvolutionParameter", "CInnerProductParameter",
    "DNSConvolutionParameter", "DNSInnerProductParameter", "INQConvolutionParameter",
    "INQInnerProductParameter",
)

HONOURED = {
    ("BatchNormParameter", "scale_bias"): "layers/batch_norm.py",
    ("BatchNormParameter", "scale_filler"): "layers/batch_norm.py",
    ("BatchNormParameter", "bias_filler"): "layers/batch_norm.py",
    ("ParamSpec", "regularization_type"): "solvers/regularizers.py",
    # SSL structured-sparsity training (scnn)
    ("SolverParameter", "breadth_decay"): "compress/ssl_training.py",
    ("SolverParameter", "kernel_shape_decay"): "compress/ssl_training.py",
    ("SolverParameter", "block_group_decay"): "compress/ssl_training.py",
    ("ParamSpec", "breadth_decay_mult"): "compress/ssl_training.py",
    ("ParamSpec", "kernel_shape_decay_mult"): "compress/ssl_training.py",
    ("ParamSpec", "block_group_lasso"): "compress/ssl_training.py",
    ("ParamSpec", "decay_proto"): "compress/ssl_training.py",
    ("LayerParameter", "connectivity_mode"): "compress/ssl_training.py",
    # SSL's sparse convolution engines, forward and backward (scnn, intel)
    ("ConvolutionParameter", "conv_mode"): "layers/convolution.py",
    # caffe-jacinto sparsification: G1 (weight_connect_mode) and G2/G3 (sparse_mode)
    ("SolverParameter", "weight_connect_mode"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "threshold_weights"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_threshold"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_target"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_lr_mult"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparse_mode"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_step_factor"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_step_iter"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_start_iter"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_start_factor"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_threshold_maxratio"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_itr_increment_bfr_applying"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "sparsity_threshold_value_max"): "compress/jacinto_sparsity.py",
    ("SolverParameter", "display_sparsity"): "compress/jacinto_sparsity.py",
    # caffe-jacinto quantization: Q-A in the solver, Q-B/Q-C in the net
    ("SolverParameter", "insert_quantization_param"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "quantization_start_iter"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "quantize_weights"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "quantize_activations"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "unsigned_check_in"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "unsigned_check_out"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "quantization_param"): "compress/jacinto_quantize_solver.py",
    ("SolverParameter", "display_quantization"): "compress/jacinto_quantize_solver.py",
    ("NetParameter", "quantize"): "compress/jacinto_quantize.py",
    ("NetParameter", "net_quantization_param"): "compress/jacinto_quantize.py",
    ("LayerParameter", "quantization_param"): "compress/layer_qparams.py",
    # caffe-jacinto snapshots, weight loading, data and loss
    ("SolverParameter", "snapshot_log"): "compress/snapshot_log.py",
    ("LayerParameter", "snapshot_log_weights"): "compress/snapshot_log.py",
    ("LayerParameter", "snapshot_log_in"): "compress/snapshot_log.py",
    ("LayerParameter", "snapshot_log_out"): "compress/snapshot_log.py",
    ("SolverParameter", "ignore_mismatching_blobs"): "solvers/base.py",
    ("SolverParameter", "ignore_shape_mismatch"): "solvers/base.py",
    ("BlobProto", "raw_data"): "io/blobs.py",
    ("BlobProto", "raw_data_type"): "io/blobs.py",
    ("BlobProto", "raw_diff"): "io/blobs.py",
    ("BlobProto", "raw_diff_type"): "io/blobs.py",
    ("DataParameter", "shuffle"): "layers/data.py",
    ("DataParameter", "shuffle_skip_max"): "layers/data.py",
    ("LossParameter", "label_weights"): "layers/softmax_loss.py",
    # NNMC's solver additions (NNMC's rule also for NVCaffe / caffe-jacinto 0.17 files)
    ("SolverParameter", "rampup_interval"): "solvers/lr_policy.py",
    ("SolverParameter", "rampup_lr"): "solvers/lr_policy.py",
    ("SolverParameter", "min_lr"): "solvers/lr_policy.py",
    ("SolverParameter", "local_gw_ratio"): "solvers/lars_sgd.py",
    # DNS (official, NNMC) and NNMC's INQ layers
    ("LayerParameter", "cconvolution_param"): "layers/cconvolution.py",
    ("LayerParameter", "cinner_product_param"): "layers/cinner_product.py",
    ("LayerParameter", "dns_convolution_param"): "layers/dns_convolution.py",
    ("LayerParameter", "dns_inner_product_param"): "layers/dns_inner_product.py",
    ("LayerParameter", "inq_convolution_param"): "layers/inq_convolution.py",
    ("LayerParameter", "inq_inner_product_param"): "layers/inq_inner_product.py",
}

_CUDNN = "picks a cuDNN algorithm; the convolution computed is the same"
INERT = {
    ("NetParameter", "default_conv_algos_override"): _CUDNN,
    ("ConvolutionParameter", "conv_algos_override"): _CUDNN,
    ("ConvolutionParameter", "cudnn_convolution_algo_seeker"): _CUDNN,
    ("NetParameter", "reduce_buckets"): "bucket count of multi-GPU gradient reduction",
    ("BatchNormParameter", "engine"): "CAFFE or CUDNN code for the same formula",
    ("DropoutParameter", "engine"): "CAFFE or CUDNN code for the same formula",
    ("DataParameter", "threads"): "NVCaffe's reader thread count: same records, same order",
    ("DataParameter", "parser_threads"): "NVCaffe's decoder thread count: same records, "
                                         "same order",
    ("DataParameter", "cache"): "keeps the database in memory; the records and their order "
                                "stay the same (reordering is `shuffle`)",
    ("ImageDataParameter", "threads"): "NVCaffe's image decoder thread count",
    ("TransformationParameter", "use_gpu_transform"): "runs the same transformation on the GPU",
    ("LayerParameter", "weight_connect_mode"): "output only in caffe-jacinto G1: the solver "
                                               "writes its mode there and nothing reads it",
    ("LayerParameter", "recurrent_param"): "BVLC's own field; NVCaffe 0.17 only renumbered it "
                                           "(146 -> 151), which binary files alone see",
    ("Datum", "record_id"): "a record's id in NVCaffe's databases; a Data layer reads only the "
                            "image and label",
}

_SEGMENTATION = ("not planned: caffe-jacinto 0.15's segmentation layers (ImageLabelData, "
                 "ImageLabelTransformation, SoftmaxWithWeightedLoss, IOUAccuracy); no corpus "
                 "file uses them")
_MULTI_PRECISION = ("not planned: NVCaffe's FLOAT16 storage and math are a GPU speed "
                    "feature; caffe-lite computes in float32 (FLOAT)")
_FORCE = ("not planned: SSL master's force regularization; no corpus file or golden output "
          "uses it and only its names are known (FORK_FIELDS.md 3.3)")
_SEED = ("not planned: a per-layer seed (NVCaffe's Dropout, caffe-jacinto's transformation); "
         "caffe-lite seeds every random layer from SolverParameter.random_seed")

NOT_IMPLEMENTED = {
    # --- not planned
    ("LayerParameter", "image_label_data_param"): Pending(_SEGMENTATION),
    ("LayerParameter", "image_label_transform_param"): Pending(_SEGMENTATION),
    ("TransformationParameter", "display"): Pending(_SEGMENTATION, (False,)),
    ("TransformationParameter", "num_labels"): Pending(_SEGMENTATION, (0,)),
    ("LossParameter", "bootstrap_samples_fraction"): Pending(_SEGMENTATION),
    ("LossParameter", "bootstrap_prob_threshold"): Pending(_SEGMENTATION),
    ("LossParameter", "assign_label_weights"): Pending(_SEGMENTATION, (False,)),
    ("LossParameter", "num_label_weights"): Pending(_SEGMENTATION),
    ("AccuracyParameter", "history_size"): Pending(_SEGMENTATION),
    ("NetParameter", "default_forward_type"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("NetParameter", "default_backward_type"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("NetParameter", "default_forward_math"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("NetParameter", "default_backward_math"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("LayerParameter", "forward_type"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("LayerParameter", "backward_type"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("LayerParameter", "forward_math"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("LayerParameter", "backward_math"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("SolverParameter", "solver_data_type"): Pending(_MULTI_PRECISION, ("FLOAT",)),
    ("NetParameter", "global_grad_scale"): Pending(
        "not planned: NVCaffe's loss scaling, which keeps FLOAT16 gradients in range", (1.0,)),
    ("LayerParameter", "debug"): Pending(
        "not planned: NVCaffe's per-layer debug dump; the solver's debug_info prints the "
        "same statistics", (False,)),
    ("LayerParameter", "detectnet_groundtruth_param"): Pending(
        "not planned: NVCaffe's DetectNet object-detection layers; no corpus file uses them"),
    ("LayerParameter", "detectnet_augmentation_param"): Pending(
        "not planned: NVCaffe's DetectNet object-detection layers; no corpus file uses them"),
    ("PoolingParameter", "torch_pooling"): Pending(
        "not planned: NVCaffe 0.17's Torch-style pooled size; no corpus file uses it",
        (False,)),
    ("DropoutParameter", "random_seed"): Pending(_SEED, (-1,)),
    ("TransformationParameter", "random_seed"): Pending(_SEED, (-1,)),
    ("SolverParameter", "force_type"): Pending(_FORCE),
    ("SolverParameter", "force_decay"): Pending(_FORCE, (0.0,)),
    ("SolverParameter", "force_iter"): Pending(_FORCE),
    ("SolverParameter", "force_decay_type"): Pending(_FORCE),
    ("SolverParameter", "force_direction"): Pending(_FORCE),
    ("ParamSpec", "force_regularize"): Pending(_FORCE),
    ("ParamSpec", "force_mult"): Pending(_FORCE, (0.0,)),
    ("LayerParameter", "display"): Pending(_FORCE, (False,)),
    ("LayerParameter", "sparsify_param"): Pending(_FORCE),
    ("LayerParameter", "symmetric_rectify_param"): Pending(_FORCE),
}

_strict = False
_warned = set()
# A text that names none of these skips the walk (most BVLC files).
_NAMES = re.compile(r"\b(?:%s)\b" % "|".join(sorted({f for _, f in NOT_IMPLEMENTED})))


def set_strict(flag):
    """Make unhonoured fork fields errors (True) or warnings (False); returns the old setting."""
    global _strict
    old, _strict = _strict, bool(flag)
    return old


def is_strict():
    return _strict


def fork_field_keys():
    """Every (message, field) that the tables must classify (VINTAGE_FIELDS less FORK_MESSAGES)."""
    keys = set()
    for fields in VINTAGE_FIELDS.values():
        keys.update(k for k in fields if k[0] not in FORK_MESSAGES)
    return keys


def forks_of(key):
    """'caffe-jacinto/NVCaffe': the forks whose vintages have (message, field) `key`."""
    forks = [FORK_OF_VINTAGE[v] for v, fields in VINTAGE_FIELDS.items() if key in fields]
    return "/".join(dict.fromkeys(forks))


def unhonoured_fields(text, descriptor):
    """The Occurrences (io.field_positions) of NOT_IMPLEMENTED fields that `text`, which parses
    as message `descriptor`, sets to a value that is not inert, in file order.

    The contents of such a field are not searched: the field speaks for them.
    """
    if not _NAMES.search(text):
        return []
    found = field_occurrences(text, descriptor, select=_pending_descriptors().__contains__,
                              prune=lambda occ: True)
    return [occ for occ in found if not _is_inert(occ)]


def describe(occ):
    """What one Occurrence sets that caffe-lite does not do, without file, line or verdict."""
    message, name = occ.key
    plan = NOT_IMPLEMENTED[occ.key].plan
    value = f": {occ.raw}" if occ.raw is not None else ""
    why = (f"yet (issue {plan})" if plan.startswith("#")
           else "(not planned, see docs/fork_fields.md)")
    return (f"{occ.place}{value} ({forks_of(occ.key)} {message}.{name}) is not implemented "
            f"in caffe-lite {why}")


def check_fork_fields(text, descriptor, path):
    """Warn about (or, when strict, raise on) each unhonoured fork field `text` sets."""
    for occ in unhonoured_fields(text, descriptor):
        if _strict:
            raise CaffeError(f"{describe(occ)}: refused in strict mode", path, occ.line)
        seen = (os.path.abspath(path), occ.line, occ.key)
        if seen not in _warned:
            _warned.add(seen)
            LOG.warning("%s:%d: %s: ignored", path, occ.line, describe(occ))


@lru_cache(maxsize=1)
def _pending_descriptors():
    pool = caffe_pb2.DESCRIPTOR.pool
    return frozenset(pool.FindMessageTypeByName(f"caffe.{message}").fields_by_name[name]
                     for message, name in NOT_IMPLEMENTED)


def _is_inert(occ):
    inert = NOT_IMPLEMENTED[occ.key].inert
    if occ.raw is None or not inert:
        return False
    return _value(occ.field, occ.raw) in inert


def _value(field, raw):
    """The value protobuf reads from `name: raw`; an enum value by its name."""
    holder = message_factory.GetMessageClass(field.containing_type)()
    text_format.Parse(f"{field.name}: {raw}", holder)
    value = getattr(holder, field.name)
    if field.is_repeated:
        value = value[0]
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    return value
