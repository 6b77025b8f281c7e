"""Field numbers of each Caffe fork vintage, as data.

caffe-lite's schema (proto/caffe.proto) keeps every BVLC number and, for fork
fields, the newest vintage's number unless that number is taken by BVLC or by
another fork; such fields were moved to a block (see docs/schema.md):

    51000 + n   caffe-jacinto caffe-0.15 numbering (G1/G2/G3 on 0.15, Q-A)
    52000 + n   caffe-jacinto early/mid 0.16 numbering (rc0.16.1, c1f17c99, Q-B)
    53000 + n   SSL, wenwei202/caffe `scnn`
    54000 + n   SSL, wenwei202/caffe `master` / `sfm` (force regularization)
    55000 + n   NNMC, 32l/Neural-Network-Model-Compressing
    56000 + n   official DNS, yiwenguo/Dynamic-Network-Surgery
    57000 + n   NVCaffe (base of caffe-jacinto 0.16/0.17)

VINTAGE_FIELDS records the numbers each vintage really used (from
/work/shared/FORK_FIELDS.md).  FOREIGN_NUMBERS is derived from it: every
(message, number) at which some vintage wrote a field that our schema does
not have at that number.  A binary loader that meets an unknown field (or a
wire-type clash) at such a number can name the vintage with
`describe_foreign_field`.
"""
from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType

# Human-readable vintage names, in chronological order.
VINTAGES = {
    "jacinto-G1": "caffe-jacinto caffe-0.15, Jan-Jun 2017 (G1: weight_connect_mode)",
    "jacinto-0.15": "caffe-jacinto caffe-0.15 head (G2/G3: sparse_mode)",
    "jacinto-rc0.16.1": "caffe-jacinto tag tidsp.rc0.16.1 / mid caffe-0.16 (c1f17c99)",
    "jacinto-0.16": "caffe-jacinto caffe-0.16 head",
    "jacinto-0.17": "caffe-jacinto caffe-0.17",
    "nvcaffe-0.17": "NVIDIA Caffe 0.17 (base of caffe-jacinto 0.17)",
    "ssl-scnn": "SSL, wenwei202/caffe branch scnn",
    "ssl-master": "wenwei202/caffe branch master/sfm (force regularization)",
    "dns-official": "Dynamic Network Surgery, yiwenguo/Dynamic-Network-Surgery",
    "nnmc": "NNMC, 32l/Neural-Network-Model-Compressing (DNS + INQ)",
}

_QA = {  # Ristretto-style QuantizationParameter (caffe-0.15, rc0.16.1)
    ("QuantizationParameter", "precision"): 1,
    ("QuantizationParameter", "rounding_scheme"): 2,
    ("QuantizationParameter", "bw_layer_in"): 3,
    ("QuantizationParameter", "bw_layer_out"): 4,
    ("QuantizationParameter", "bw_weights"): 5,
    ("QuantizationParameter", "fl_layer_in"): 6,
    ("QuantizationParameter", "fl_layer_out"): 7,
    ("QuantizationParameter", "fl_weights"): 8,
    ("QuantizationParameter", "mant_bits"): 9,
    ("QuantizationParameter", "exp_bits"): 10,
    ("QuantizationParameter", "exp_min"): 11,
    ("QuantizationParameter", "exp_max"): 12,
    ("QuantizationParameter", "unsigned_layer_in"): 13,
    ("QuantizationParameter", "unsigned_layer_out"): 14,
    ("QuantizationParameter", "min_layer_in"): 15,
    ("QuantizationParameter", "min_layer_out"): 16,
    ("QuantizationParameter", "max_layer_in"): 17,
    ("QuantizationParameter", "max_layer_out"): 18,
    ("QuantizationParameter", "min_layer_weights"): 19,
    ("QuantizationParameter", "max_layer_weights"): 20,
    ("QuantizationParameter", "quantize_layer_in"): 21,
    ("QuantizationParameter", "quantize_layer_out"): 22,
    ("QuantizationParameter", "quantize_layer_weights"): 23,
}

_JACINTO_015_COMMON = {
    ("LayerParameter", "quantization_param"): 147,
    ("LayerParameter", "image_label_data_param"): 1000,
    ("LayerParameter", "image_label_transform_param"): 8402,
    ("LayerParameter", "snapshot_log_weights"): 200,
    ("LayerParameter", "snapshot_log_in"): 201,
    ("LayerParameter", "snapshot_log_out"): 202,
    ("TransformationParameter", "display"): 12,
    ("TransformationParameter", "num_labels"): 16,
    ("DataParameter", "shuffle"): 12,
    ("DataParameter", "shuffle_skip_max"): 13,
    ("LossParameter", "bootstrap_samples_fraction"): 4,
    ("LossParameter", "bootstrap_prob_threshold"): 5,
    ("LossParameter", "assign_label_weights"): 6,
    ("LossParameter", "num_label_weights"): 7,
    ("AccuracyParameter", "history_size"): 4,
    ("BatchNormParameter", "scale_filler"): 5,
    ("BatchNormParameter", "bias_filler"): 6,
    ("SolverParameter", "ignore_mismatching_blobs"): 42,
    ("SolverParameter", "snapshot_log"): 43,
    ("SolverParameter", "display_sparsity"): 44,
    ("SolverParameter", "quantization_start_iter"): 46,
    ("SolverParameter", "unsigned_check_in"): 47,
    ("SolverParameter", "unsigned_check_out"): 48,
    ("SolverParameter", "quantize_weights"): 49,
    ("SolverParameter", "quantize_activations"): 50,
    ("SolverParameter", "quantization_param"): 51,
    ("SolverParameter", "display_quantization"): 53,
    ("SolverParameter", "insert_quantization_param"): 55,
    **_QA,
}

_NVCAFFE_016 = {
    ("NetParameter", "default_forward_type"): 11,
    ("NetParameter", "default_backward_type"): 12,
    ("NetParameter", "default_forward_math"): 13,
    ("NetParameter", "default_backward_math"): 14,
    ("NetParameter", "default_conv_algos_override"): 17,
    ("NetParameter", "reduce_buckets"): 18,
    ("LayerParameter", "forward_type"): 145,
    ("LayerParameter", "backward_type"): 146,
    ("LayerParameter", "forward_math"): 147,
    ("LayerParameter", "backward_math"): 148,
    ("LayerParameter", "debug"): 149,
    ("LayerParameter", "detectnet_groundtruth_param"): 6801,
    ("LayerParameter", "detectnet_augmentation_param"): 6802,
    ("BlobProto", "raw_data_type"): 10,
    ("BlobProto", "raw_diff_type"): 11,
    ("BlobProto", "raw_data"): 12,
    ("BlobProto", "raw_diff"): 13,
    ("Datum", "record_id"): 8,
    ("SolverParameter", "rampup_interval"): 41,
    ("SolverParameter", "rampup_lr"): 42,
    ("SolverParameter", "min_lr"): 43,
    ("SolverParameter", "solver_data_type"): 44,
    ("TransformationParameter", "use_gpu_transform"): 8,
    ("ConvolutionParameter", "cudnn_convolution_algo_seeker"): 19,
    ("ConvolutionParameter", "conv_algos_override"): 20,
    ("DataParameter", "threads"): 11,
    ("DataParameter", "parser_threads"): 12,
    ("DropoutParameter", "engine"): 2,
    ("DropoutParameter", "random_seed"): 3,
    ("BatchNormParameter", "scale_filler"): 5,
    ("BatchNormParameter", "bias_filler"): 6,
    ("BatchNormParameter", "scale_bias"): 7,
    ("BatchNormParameter", "engine"): 15,
}

_JACINTO_016_HEAD_SOLVER = {
    ("SolverParameter", "ignore_shape_mismatch"): 150,
    ("SolverParameter", "snapshot_log"): 151,
    ("SolverParameter", "display_sparsity"): 152,
    ("SolverParameter", "sparse_mode"): 153,
    ("SolverParameter", "sparsity_target"): 154,
    ("SolverParameter", "sparsity_step_factor"): 155,
    ("SolverParameter", "sparsity_step_iter"): 156,
    ("SolverParameter", "sparsity_start_iter"): 157,
    ("SolverParameter", "sparsity_start_factor"): 158,
    ("SolverParameter", "sparsity_threshold_maxratio"): 159,
    ("SolverParameter", "sparsity_itr_increment_bfr_applying"): 160,
    ("SolverParameter", "sparsity_threshold_value_max"): 161,
    ("NetParameter", "quantize"): 200,
    ("NetParameter", "net_quantization_param"): 201,
    ("LayerParameter", "image_label_data_param"): 8403,
    ("LayerParameter", "quantization_param"): 8404,
    ("TransformationParameter", "random_seed"): 9,
    ("DataParameter", "shuffle"): 14,
}

# (message, field name) -> number, per vintage.  Only fork-specific fields.
VINTAGE_FIELDS = {
    "jacinto-G1": {
        **_JACINTO_015_COMMON,
        ("SolverParameter", "sparsity_threshold"): 45,
        ("SolverParameter", "weight_connect_mode"): 52,
        ("SolverParameter", "threshold_weights"): 56,
        ("SolverParameter", "sparsity_target"): 57,
        ("SolverParameter", "sparsity_lr_mult"): 58,
        ("LayerParameter", "weight_connect_mode"): 12,
    },
    "jacinto-0.15": {
        **_JACINTO_015_COMMON,
        ("SolverParameter", "sparse_mode"): 52,
        ("SolverParameter", "sparsity_target"): 62,
        ("SolverParameter", "sparsity_step_factor"): 63,
        ("SolverParameter", "sparsity_step_iter"): 64,
        ("SolverParameter", "sparsity_start_iter"): 65,
        ("SolverParameter", "sparsity_start_factor"): 66,
        ("TransformationParameter", "random_seed"): 9,
    },
    "jacinto-rc0.16.1": {
        **_NVCAFFE_016,
        **_QA,
        ("SolverParameter", "ignore_mismatching_blobs"): 50,
        ("SolverParameter", "snapshot_log"): 51,
        ("SolverParameter", "display_sparsity"): 52,
        ("SolverParameter", "sparse_mode"): 53,
        ("SolverParameter", "quantization_start_iter"): 54,
        ("SolverParameter", "unsigned_check_in"): 55,
        ("SolverParameter", "unsigned_check_out"): 56,
        ("SolverParameter", "quantize_weights"): 57,
        ("SolverParameter", "quantize_activations"): 58,
        ("SolverParameter", "quantization_param"): 59,
        ("SolverParameter", "display_quantization"): 60,
        ("SolverParameter", "insert_quantization_param"): 61,
        # c1f17c99 (mid 0.16) only:
        ("SolverParameter", "sparsity_target"): 62,
        ("SolverParameter", "sparsity_step_factor"): 63,
        ("SolverParameter", "sparsity_step_iter"): 64,
        ("SolverParameter", "sparsity_start_iter"): 65,
        ("SolverParameter", "sparsity_start_factor"): 66,
        ("LayerParameter", "image_label_data_param"): 8403,
        ("LayerParameter", "quantization_param"): 8404,
        ("LayerParameter", "snapshot_log_weights"): 8405,
        ("LayerParameter", "snapshot_log_in"): 8406,
        ("LayerParameter", "snapshot_log_out"): 8407,
        ("TransformationParameter", "display"): 12,
        ("TransformationParameter", "num_labels"): 16,
    },
    "jacinto-0.16": {
        **_JACINTO_016_HEAD_SOLVER,
        ("LayerParameter", "snapshot_log_weights"): 8405,
        ("LayerParameter", "snapshot_log_in"): 8406,
        ("LayerParameter", "snapshot_log_out"): 8407,
        ("TransformationParameter", "display"): 20,
        ("TransformationParameter", "num_labels"): 21,
        # Q-B quantization messages
        ("QuantizationParameter", "precision"): 1,
        ("QuantizationParameter", "rounding_scheme"): 2,
        ("QuantizationParameter", "power2_range"): 3,
        ("QuantizationParameter", "quantized_infer_count"): 4,
        ("QuantizationParameter", "qparam_in"): 5,
        ("QuantizationParameter", "qparam_out"): 6,
        ("QuantizationParameter", "qparam_w"): 7,
        ("QuantizationParameter.QParams", "quantize"): 1,
        ("QuantizationParameter.QParams", "bitwidth"): 2,
        ("QuantizationParameter.QParams", "fracbits"): 4,
        ("QuantizationParameter.QParams", "unsigned_data"): 5,
        ("QuantizationParameter.QParams", "unsigned_quant"): 6,
        ("QuantizationParameter.QParams", "scale"): 7,
        ("QuantizationParameter.QParams", "offset"): 8,
        ("QuantizationParameter.QParams", "min"): 9,
        ("QuantizationParameter.QParams", "max"): 10,
        ("NetQuantizationParameter", "quantization_start"): 1,
        ("NetQuantizationParameter", "precision"): 2,
        ("NetQuantizationParameter", "rounding_scheme"): 3,
        ("NetQuantizationParameter", "bitwidth_activations"): 4,
        ("NetQuantizationParameter", "bitwidth_weights"): 5,
        ("NetQuantizationParameter", "quantize_weights"): 8,
        ("NetQuantizationParameter", "quantize_activations"): 9,
        ("NetQuantizationParameter", "display_quantization"): 10,
        ("NetQuantizationParameter", "insert_quantization_param"): 11,
        ("NetQuantizationParameter", "power2_range"): 12,
        ("NetQuantizationParameter", "apply_offset_activations"): 13,
        ("NetQuantizationParameter", "apply_offset_weights"): 14,
    },
    "jacinto-0.17": {
        **_JACINTO_016_HEAD_SOLVER,
        ("TransformationParameter", "display"): 22,
        ("TransformationParameter", "num_labels"): 23,
        ("LossParameter", "label_weights"): 4,
        ("QuantizationParameter", "precision"): 1,
        ("QuantizationParameter", "rounding_scheme"): 2,
        ("QuantizationParameter", "power2_scale_weights"): 3,
        ("QuantizationParameter", "power2_scale_activations"): 4,
        ("QuantizationParameter", "qparam_in"): 5,
        ("QuantizationParameter", "qparam_w"): 6,
        ("QuantizationParameter", "qparam_out"): 7,
        ("QuantizationParameter", "quantized_infer_count"): 8,
        ("QuantizationParameter.QParams", "quantize"): 1,
        ("QuantizationParameter.QParams", "bitwidth"): 2,
        ("QuantizationParameter.QParams", "fracbits"): 3,
        ("QuantizationParameter.QParams", "unsigned_data"): 4,
        ("QuantizationParameter.QParams", "unsigned_quant"): 5,
        ("QuantizationParameter.QParams", "scale_target"): 6,
        ("QuantizationParameter.QParams", "scale_applied"): 7,
        ("QuantizationParameter.QParams", "shiftbits"): 8,
        ("QuantizationParameter.QParams", "offset"): 9,
        ("QuantizationParameter.QParams", "min"): 10,
        ("QuantizationParameter.QParams", "max"): 11,
        ("NetQuantizationParameter", "quantize_weights"): 1,
        ("NetQuantizationParameter", "quantize_activations"): 2,
        ("NetQuantizationParameter", "bitwidth_weights"): 3,
        ("NetQuantizationParameter", "bitwidth_activations"): 4,
        ("NetQuantizationParameter", "bitwidth_bias"): 5,
        ("NetQuantizationParameter", "power2_scale_weights"): 6,
        ("NetQuantizationParameter", "power2_scale_activations"): 7,
        ("NetQuantizationParameter", "apply_offset_weights"): 8,
        ("NetQuantizationParameter", "apply_offset_activations"): 9,
        ("NetQuantizationParameter", "precision"): 10,
        ("NetQuantizationParameter", "rounding_scheme"): 11,
        ("NetQuantizationParameter", "display_quantization"): 12,
        ("NetQuantizationParameter", "update_quantization_param"): 13,
        ("NetQuantizationParameter", "quantization_start"): 14,
        ("NetQuantizationParameter", "range_update_factor"): 15,
        ("NetQuantizationParameter", "range_expansion_factor"): 16,
        ("NetQuantizationParameter", "ignored_layer_names"): 17,
    },
    "nvcaffe-0.17": {
        **{k: v for k, v in _NVCAFFE_016.items() if k[0] != "SolverParameter"},
        ("SolverParameter", "rampup_interval"): 41,
        ("SolverParameter", "rampup_lr"): 42,
        ("SolverParameter", "min_lr"): 43,
        ("SolverParameter", "solver_data_type"): 44,
        ("NetParameter", "global_grad_scale"): 15,
        ("LayerParameter", "recurrent_param"): 151,
        ("DataParameter", "cache"): 13,
        ("DataParameter", "shuffle"): 14,
        ("ImageDataParameter", "threads"): 14,
        ("PoolingParameter", "torch_pooling"): 40,
    },
    "ssl-scnn": {
        ("SolverParameter", "breadth_decay"): 41,
        ("SolverParameter", "kernel_shape_decay"): 42,
        ("SolverParameter", "block_group_decay"): 43,
        ("ParamSpec", "breadth_decay_mult"): 5,
        ("ParamSpec", "kernel_shape_decay_mult"): 6,
        ("ParamSpec", "block_group_lasso"): 7,
        ("ParamSpec", "regularization_type"): 8,
        ("ParamSpec", "decay_proto"): 9,
        ("BlockGroupLassoSpec", "xdimen"): 1,
        ("BlockGroupLassoSpec", "ydimen"): 2,
        ("BlockGroupLassoSpec", "block_decay_mult"): 3,
        ("LayerParameter", "connectivity_mode"): 12,
        ("ConvolutionParameter", "conv_mode"): 21,
    },
    "ssl-master": {
        ("SolverParameter", "force_type"): 41,
        ("SolverParameter", "force_decay"): 42,
        ("SolverParameter", "force_iter"): 43,
        ("SolverParameter", "force_decay_type"): 44,
        ("SolverParameter", "force_direction"): 45,
        ("ParamSpec", "force_regularize"): 5,
        ("ParamSpec", "force_mult"): 6,
        ("LayerParameter", "display"): 12,
        ("LayerParameter", "sparsify_param"): 147,
        ("LayerParameter", "symmetric_rectify_param"): 148,
    },
    "dns-official": {
        ("LayerParameter", "cconvolution_param"): 140,
        ("LayerParameter", "cinner_product_param"): 141,
        ("CConvolutionParameter", "gamma"): 1,
        ("CConvolutionParameter", "power"): 2,
        ("CConvolutionParameter", "iter_stop"): 3,
        ("CConvolutionParameter", "c_rate"): 4,
        ("CConvolutionParameter", "weight_mask_filler"): 5,
        ("CConvolutionParameter", "bias_mask_filler"): 6,
        ("CInnerProductParameter", "gamma"): 1,
        ("CInnerProductParameter", "power"): 2,
        ("CInnerProductParameter", "iter_stop"): 3,
        ("CInnerProductParameter", "c_rate"): 4,
        ("CInnerProductParameter", "weight_mask_filler"): 5,
        ("CInnerProductParameter", "bias_mask_filler"): 6,
    },
    "nnmc": {
        ("SolverParameter", "rampup_interval"): 42,
        ("SolverParameter", "rampup_lr"): 43,
        ("SolverParameter", "min_lr"): 44,
        ("SolverParameter", "local_gw_ratio"): 45,
        ("LayerParameter", "dns_convolution_param"): 147,
        ("LayerParameter", "dns_inner_product_param"): 148,
        ("LayerParameter", "inq_convolution_param"): 149,
        ("LayerParameter", "inq_inner_product_param"): 150,
        ("LayerParameter", "cconvolution_param"): 151,
        ("LayerParameter", "cinner_product_param"): 152,
        ("CInnerProductParameter", "c_rate"): 3,
        ("CInnerProductParameter", "iter_stop"): 4,
        ("CInnerProductParameter", "alpha_low"): 7,
        ("CInnerProductParameter", "alpha_high"): 8,
        ("CConvolutionParameter", "alpha_low"): 7,
        ("CConvolutionParameter", "alpha_high"): 8,
        ("DNSConvolutionParameter", "c_rate"): 3,
        ("DNSConvolutionParameter", "iter_stop"): 4,
        ("DNSInnerProductParameter", "c_rate"): 3,
        ("DNSInnerProductParameter", "iter_stop"): 4,
        ("INQConvolutionParameter", "portion"): 1,
        ("INQConvolutionParameter", "num_quantum_values"): 4,
        ("INQInnerProductParameter", "portion"): 1,
        ("INQInnerProductParameter", "num_quantum_values"): 4,
    },
}


@lru_cache(maxsize=1)
def _our_fields():
    """(message, number) -> field name in our schema, for every message."""
    from caffe_lite.proto import caffe_pb2

    out = {}

    def walk(desc, prefix):
        name = prefix + desc.name
        for f in desc.fields:
            out[(name, f.number)] = f.name
        for nested in desc.nested_types:
            walk(nested, name + ".")

    for desc in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(desc, "")
    return out


def _foreign_numbers():
    ours = _our_fields()
    table = {}
    for vintage, fields in VINTAGE_FIELDS.items():
        for (message, name), number in fields.items():
            if ours.get((message, number)) == name:
                continue  # same field at the same number: compatible
            table.setdefault((message, number), []).append(f"{vintage} {name}")
    return MappingProxyType({k: " / ".join(v) for k, v in sorted(table.items())})


# (message, number) -> "vintage field / vintage field ...": numbers at which a
# fork vintage wrote a field that our schema either lacks or uses for another
# field.  E.g. ("SolverParameter", 52) ->
# "jacinto-G1 weight_connect_mode / jacinto-0.15 sparse_mode / jacinto-rc0.16.1 display_sparsity".
FOREIGN_NUMBERS = _foreign_numbers()


def describe_foreign_field(message: str, number: int) -> str | None:
    """One-line explanation for a field number our schema does not expect.

    `message` is the unqualified message name ("SolverParameter", or
    "QuantizationParameter.QParams" for nested ones).  Returns None when no
    known vintage used that number.
    """
    who = FOREIGN_NUMBERS.get((message, number))
    if who is None:
        return None
    ours = _our_fields().get((message, number))
    clash = f" (caffe-lite reads {number} as {ours})" if ours else ""
    return (f"field {number} of {message} is from {who}{clash}; "
            "this file is from an incompatible vintage")
