"""Schema tests: generated module freshness, protobuf backend, fork field
numbers per vintage (the tables in docs/schema.md), corpus and golden files."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from google.protobuf import text_format, unknown_fields
from google.protobuf.internal import api_implementation

from caffe_lite.proto import caffe_pb2, vintages

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus"
GOLDEN = SHARED / "golden"


def _desc(message: str):
    """Descriptor of a message given as "Name" or "Outer.Inner"."""
    outer, *inner = message.split(".")
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[outer]
    for name in inner:
        desc = desc.nested_types_by_name[name]
    return desc


# ---------------------------------------------------------------------------
# (a) the committed module is what tools/gen_proto.py makes now
# ---------------------------------------------------------------------------

def _serialized_descriptor(py_source: bytes) -> bytes:
    m = re.search(rb"AddSerializedFile\((b'.*?')\)\n", py_source, re.S)
    assert m, "no AddSerializedFile(...) in the generated module"
    return eval(m.group(1))  # a bytes literal written by protoc


def test_generated_module_is_fresh():
    pytest.importorskip("grpc_tools.protoc")
    committed = (REPO / "caffe_lite" / "proto" / "caffe_pb2.py").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(REPO / "tools" / "gen_proto.py"),
                        "--out", tmp], check=True, capture_output=True)
        fresh = (Path(tmp) / "caffe_pb2.py").read_bytes()
    # The schema itself must match whatever protoc made the module ...
    assert _serialized_descriptor(fresh) == _serialized_descriptor(committed), (
        "caffe_lite/proto/caffe_pb2.py is stale: run python3 tools/gen_proto.py")
    # ... and with the same protoc, the whole file byte for byte.
    version = re.compile(rb"# Protobuf Python Version: (\S+)")
    if version.search(fresh).group(1) == version.search(committed).group(1):
        assert fresh == committed


def test_generation_is_deterministic():
    pytest.importorskip("grpc_tools.protoc")
    outs = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, str(REPO / "tools" / "gen_proto.py"),
                            "--out", tmp], check=True, capture_output=True)
            outs.append((Path(tmp) / "caffe_pb2.py").read_bytes())
    assert outs[0] == outs[1]


# ---------------------------------------------------------------------------
# (b) fast backend
# ---------------------------------------------------------------------------

def test_protobuf_backend_is_native():
    assert api_implementation.Type() in ("upb", "cpp"), (
        f"protobuf runs the pure-python backend ({api_implementation.Type()}); "
        "caffemodel parsing would be far too slow")


# ---------------------------------------------------------------------------
# (c) field numbers: BVLC spot checks and every fork claim in docs/schema.md
# ---------------------------------------------------------------------------

BVLC_LAYER_PARAMS = {
    "transform_param": 100, "loss_param": 101, "accuracy_param": 102,
    "argmax_param": 103, "concat_param": 104, "contrastive_loss_param": 105,
    "convolution_param": 106, "data_param": 107, "dropout_param": 108,
    "dummy_data_param": 109, "eltwise_param": 110, "exp_param": 111,
    "hdf5_data_param": 112, "hdf5_output_param": 113, "hinge_loss_param": 114,
    "image_data_param": 115, "infogain_loss_param": 116,
    "inner_product_param": 117, "lrn_param": 118, "memory_data_param": 119,
    "mvn_param": 120, "pooling_param": 121, "power_param": 122,
    "relu_param": 123, "sigmoid_param": 124, "softmax_param": 125,
    "slice_param": 126, "tanh_param": 127, "threshold_param": 128,
    "window_data_param": 129, "python_param": 130, "prelu_param": 131,
    "spp_param": 132, "reshape_param": 133, "log_param": 134,
    "flatten_param": 135, "reduction_param": 136, "embed_param": 137,
    "tile_param": 138, "batch_norm_param": 139, "elu_param": 140,
    "bias_param": 141, "scale_param": 142, "input_param": 143,
    "crop_param": 144, "parameter_param": 145, "recurrent_param": 146,
    "swish_param": 147, "clip_param": 148,
}

BVLC_SPOT = [
    ("SolverParameter", "layer_wise_reduce", 41),
    ("SolverParameter", "weights", 42),
    ("SolverParameter", "type", 40),
    ("SolverParameter", "solver_type", 30),
    ("SolverState", "current_step", 4),
    ("NetParameter", "layer", 100),
    ("NetParameter", "layers", 2),
    ("PoolingParameter", "round_mode", 13),
    ("InfogainLossParameter", "axis", 2),
    ("BlobProto", "double_diff", 9),
    ("V1LayerParameter", "layer", 1),
    ("V1LayerParameter", "blob_share_mode", 1002),
    ("V0LayerParameter", "hdf5_output_param", 1001),
    ("ParamSpec", "decay_mult", 4),
]


@pytest.mark.parametrize("name,number", sorted(BVLC_LAYER_PARAMS.items()))
def test_bvlc_layer_param_numbers(name, number):
    assert _desc("LayerParameter").fields_by_name[name].number == number


@pytest.mark.parametrize("message,name,number", BVLC_SPOT)
def test_bvlc_spot_numbers(message, name, number):
    assert _desc(message).fields_by_name[name].number == number


def test_bvlc_defaults_kept():
    s = caffe_pb2.SolverParameter()
    assert (s.test_initialization, s.rms_decay, s.regularization_type) == (True, pytest.approx(0.99), "L2")
    assert caffe_pb2.BatchNormParameter().eps == pytest.approx(1e-5)
    assert not caffe_pb2.BatchNormParameter().HasField("use_global_stats")
    assert caffe_pb2.DataParameter().prefetch == 4
    v1 = caffe_pb2.V1LayerParameter.LayerType
    assert (v1.Value("CONVOLUTION"), v1.Value("ABSVAL"), v1.Value("DECONVOLUTION")) == (4, 35, 39)


# Every fork field: (message, name, our number, vintage whose number it is).
# "moved" rows carry the block number and the vintage of the original number.
FORK_CLAIMS = [
    # caffe-jacinto 0.16/0.17 (kept)
    ("SolverParameter", "ignore_shape_mismatch", 150, "jacinto-0.17"),
    ("SolverParameter", "snapshot_log", 151, "jacinto-0.17"),
    ("SolverParameter", "display_sparsity", 152, "jacinto-0.17"),
    ("SolverParameter", "sparse_mode", 153, "jacinto-0.17"),
    ("SolverParameter", "sparsity_target", 154, "jacinto-0.17"),
    ("SolverParameter", "sparsity_step_factor", 155, "jacinto-0.17"),
    ("SolverParameter", "sparsity_step_iter", 156, "jacinto-0.17"),
    ("SolverParameter", "sparsity_start_iter", 157, "jacinto-0.17"),
    ("SolverParameter", "sparsity_start_factor", 158, "jacinto-0.17"),
    ("SolverParameter", "sparsity_threshold_maxratio", 159, "jacinto-0.17"),
    ("SolverParameter", "sparsity_itr_increment_bfr_applying", 160, "jacinto-0.17"),
    ("SolverParameter", "sparsity_threshold_value_max", 161, "jacinto-0.17"),
    ("NetParameter", "quantize", 200, "jacinto-0.17"),
    ("NetParameter", "net_quantization_param", 201, "jacinto-0.17"),
    ("LayerParameter", "image_label_data_param", 8403, "jacinto-0.17"),
    ("LayerParameter", "quantization_param", 8404, "jacinto-0.17"),
    ("LayerParameter", "snapshot_log_weights", 8405, "jacinto-0.16"),
    ("LayerParameter", "snapshot_log_in", 8406, "jacinto-0.16"),
    ("LayerParameter", "snapshot_log_out", 8407, "jacinto-0.16"),
    ("TransformationParameter", "random_seed", 9, "jacinto-0.17"),
    ("TransformationParameter", "display", 22, "jacinto-0.17"),
    ("TransformationParameter", "num_labels", 23, "jacinto-0.17"),
    ("LossParameter", "label_weights", 4, "jacinto-0.17"),
    ("QuantizationParameter", "qparam_in", 5, "jacinto-0.17"),
    ("QuantizationParameter", "qparam_w", 6, "jacinto-0.17"),
    ("QuantizationParameter", "qparam_out", 7, "jacinto-0.17"),
    ("QuantizationParameter", "quantized_infer_count", 8, "jacinto-0.17"),
    ("QuantizationParameter.QParams", "scale_applied", 7, "jacinto-0.17"),
    ("NetQuantizationParameter", "ignored_layer_names", 17, "jacinto-0.17"),
    ("NetQuantizationParameter", "quantization_start", 14, "jacinto-0.17"),
    # caffe-jacinto 0.15 numbers kept (unique)
    ("LayerParameter", "image_label_transform_param", 8402, "jacinto-0.15"),
    ("LossParameter", "bootstrap_prob_threshold", 5, "jacinto-0.15"),
    ("LossParameter", "assign_label_weights", 6, "jacinto-0.15"),
    ("LossParameter", "num_label_weights", 7, "jacinto-0.15"),
    ("AccuracyParameter", "history_size", 4, "jacinto-0.15"),
    ("QuantizationParameter", "mant_bits", 9, "jacinto-0.15"),
    ("QuantizationParameter", "quantize_layer_weights", 23, "jacinto-0.15"),
    # NVCaffe (kept)
    ("NetParameter", "default_forward_type", 11, "nvcaffe-0.17"),
    ("NetParameter", "global_grad_scale", 15, "nvcaffe-0.17"),
    ("NetParameter", "reduce_buckets", 18, "jacinto-rc0.16.1"),
    ("LayerParameter", "detectnet_groundtruth_param", 6801, "jacinto-rc0.16.1"),
    ("BlobProto", "raw_data", 12, "nvcaffe-0.17"),
    ("BlobProto", "raw_data_type", 10, "nvcaffe-0.17"),
    ("Datum", "record_id", 8, "nvcaffe-0.17"),
    ("DataParameter", "threads", 11, "nvcaffe-0.17"),
    ("DataParameter", "parser_threads", 12, "nvcaffe-0.17"),
    ("DataParameter", "cache", 13, "nvcaffe-0.17"),
    ("DataParameter", "shuffle", 14, "nvcaffe-0.17"),
    ("ImageDataParameter", "threads", 14, "nvcaffe-0.17"),
    ("PoolingParameter", "torch_pooling", 40, "nvcaffe-0.17"),
    ("BatchNormParameter", "scale_filler", 5, "nvcaffe-0.17"),
    ("BatchNormParameter", "bias_filler", 6, "nvcaffe-0.17"),
    ("BatchNormParameter", "scale_bias", 7, "nvcaffe-0.17"),
    ("ConvolutionParameter", "conv_algos_override", 20, "jacinto-rc0.16.1"),
    # SSL scnn (kept)
    ("ParamSpec", "block_group_lasso", 7, "ssl-scnn"),
    ("ParamSpec", "regularization_type", 8, "ssl-scnn"),
    ("ParamSpec", "decay_proto", 9, "ssl-scnn"),
    ("ConvolutionParameter", "conv_mode", 21, "ssl-scnn"),
    ("BlockGroupLassoSpec", "xdimen", 1, "ssl-scnn"),
    ("BlockGroupLassoSpec", "ydimen", 2, "ssl-scnn"),
    ("BlockGroupLassoSpec", "block_decay_mult", 3, "ssl-scnn"),
    # official DNS message layouts (kept)
    ("CConvolutionParameter", "iter_stop", 3, "dns-official"),
    ("CConvolutionParameter", "c_rate", 4, "dns-official"),
    ("CInnerProductParameter", "iter_stop", 3, "dns-official"),
    ("CInnerProductParameter", "c_rate", 4, "dns-official"),
    # NNMC message layouts (kept)
    ("DNSConvolutionParameter", "c_rate", 3, "nnmc"),
    ("DNSConvolutionParameter", "iter_stop", 4, "nnmc"),
    ("INQConvolutionParameter", "portion", 1, "nnmc"),
    ("INQInnerProductParameter", "num_quantum_values", 4, "nnmc"),
]

# Moved fields: (message, name, our number, original number, vintage of it).
MOVED_CLAIMS = [
    ("SolverParameter", "ignore_mismatching_blobs", 52050, 50, "jacinto-rc0.16.1"),
    ("SolverParameter", "quantization_start_iter", 52054, 54, "jacinto-rc0.16.1"),
    ("SolverParameter", "unsigned_check_in", 52055, 55, "jacinto-rc0.16.1"),
    ("SolverParameter", "unsigned_check_out", 52056, 56, "jacinto-rc0.16.1"),
    ("SolverParameter", "quantize_weights", 52057, 57, "jacinto-rc0.16.1"),
    ("SolverParameter", "quantize_activations", 52058, 58, "jacinto-rc0.16.1"),
    ("SolverParameter", "quantization_param", 52059, 59, "jacinto-rc0.16.1"),
    ("SolverParameter", "display_quantization", 52060, 60, "jacinto-rc0.16.1"),
    ("SolverParameter", "insert_quantization_param", 52061, 61, "jacinto-rc0.16.1"),
    ("SolverParameter", "sparsity_threshold", 51045, 45, "jacinto-G1"),
    ("SolverParameter", "weight_connect_mode", 51052, 52, "jacinto-G1"),
    ("SolverParameter", "threshold_weights", 51056, 56, "jacinto-G1"),
    ("SolverParameter", "sparsity_lr_mult", 51058, 58, "jacinto-G1"),
    ("SolverParameter", "breadth_decay", 53041, 41, "ssl-scnn"),
    ("SolverParameter", "kernel_shape_decay", 53042, 42, "ssl-scnn"),
    ("SolverParameter", "block_group_decay", 53043, 43, "ssl-scnn"),
    ("SolverParameter", "force_type", 54041, 41, "ssl-master"),
    ("SolverParameter", "force_decay", 54042, 42, "ssl-master"),
    ("SolverParameter", "force_iter", 54043, 43, "ssl-master"),
    ("SolverParameter", "force_decay_type", 54044, 44, "ssl-master"),
    ("SolverParameter", "force_direction", 54045, 45, "ssl-master"),
    ("SolverParameter", "rampup_interval", 55042, 42, "nnmc"),
    ("SolverParameter", "rampup_lr", 55043, 43, "nnmc"),
    ("SolverParameter", "min_lr", 55044, 44, "nnmc"),
    ("SolverParameter", "local_gw_ratio", 55045, 45, "nnmc"),
    ("SolverParameter", "solver_data_type", 57044, 44, "nvcaffe-0.17"),
    ("ParamSpec", "breadth_decay_mult", 53005, 5, "ssl-scnn"),
    ("ParamSpec", "kernel_shape_decay_mult", 53006, 6, "ssl-scnn"),
    ("ParamSpec", "force_regularize", 54005, 5, "ssl-master"),
    ("ParamSpec", "force_mult", 54006, 6, "ssl-master"),
    ("LayerParameter", "weight_connect_mode", 51012, 12, "jacinto-G1"),
    ("LayerParameter", "connectivity_mode", 53012, 12, "ssl-scnn"),
    ("LayerParameter", "display", 54012, 12, "ssl-master"),
    ("LayerParameter", "sparsify_param", 54147, 147, "ssl-master"),
    ("LayerParameter", "symmetric_rectify_param", 54148, 148, "ssl-master"),
    ("LayerParameter", "dns_convolution_param", 55147, 147, "nnmc"),
    ("LayerParameter", "dns_inner_product_param", 55148, 148, "nnmc"),
    ("LayerParameter", "inq_convolution_param", 55149, 149, "nnmc"),
    ("LayerParameter", "inq_inner_product_param", 55150, 150, "nnmc"),
    ("LayerParameter", "cconvolution_param", 56140, 140, "dns-official"),
    ("LayerParameter", "cinner_product_param", 56141, 141, "dns-official"),
    ("LayerParameter", "forward_type", 57145, 145, "nvcaffe-0.17"),
    ("LayerParameter", "backward_type", 57146, 146, "nvcaffe-0.17"),
    ("LayerParameter", "forward_math", 57147, 147, "nvcaffe-0.17"),
    ("LayerParameter", "backward_math", 57148, 148, "nvcaffe-0.17"),
    ("LayerParameter", "debug", 57149, 149, "jacinto-rc0.16.1"),
    ("DataParameter", "shuffle_skip_max", 51013, 13, "jacinto-0.15"),
    ("LossParameter", "bootstrap_samples_fraction", 51004, 4, "jacinto-0.15"),
    ("QuantizationParameter", "bw_layer_in", 51003, 3, "jacinto-0.15"),
    ("QuantizationParameter", "bw_layer_out", 51004, 4, "jacinto-0.15"),
    ("QuantizationParameter", "bw_weights", 51005, 5, "jacinto-0.15"),
    ("QuantizationParameter", "fl_layer_in", 51006, 6, "jacinto-0.15"),
    ("QuantizationParameter", "fl_layer_out", 51007, 7, "jacinto-0.15"),
    ("QuantizationParameter", "fl_weights", 51008, 8, "jacinto-0.15"),
    ("QuantizationParameter", "power2_range", 52003, 3, "jacinto-0.16"),
    ("QuantizationParameter.QParams", "scale", 52007, 7, "jacinto-0.16"),
    ("NetQuantizationParameter", "insert_quantization_param", 52011, 11, "jacinto-0.16"),
    ("NetQuantizationParameter", "power2_range", 52012, 12, "jacinto-0.16"),
]


@pytest.mark.parametrize("message,name,number,vintage", FORK_CLAIMS)
def test_fork_field_keeps_vintage_number(message, name, number, vintage):
    assert _desc(message).fields_by_name[name].number == number
    assert vintages.VINTAGE_FIELDS[vintage][(message, name)] == number


@pytest.mark.parametrize("message,name,number,original,vintage", MOVED_CLAIMS)
def test_moved_fork_field(message, name, number, original, vintage):
    assert _desc(message).fields_by_name[name].number == number
    assert vintages.VINTAGE_FIELDS[vintage][(message, name)] == original
    # block + original number, and the original is explained for loaders
    assert number % 1000 == original % 1000 and 51000 <= number < 58000
    assert vintage in vintages.FOREIGN_NUMBERS[(message, original)]


def test_block_numbers_collide_with_nobody():
    """No block number is a real number of any vintage in the same message."""
    used = {(m, n) for fields in vintages.VINTAGE_FIELDS.values()
            for (m, _), n in fields.items()}
    for message, name, number, *_ in MOVED_CLAIMS:
        assert (message, number) not in used, (message, name, number)


def test_every_vintage_field_name_exists():
    for vintage, fields in vintages.VINTAGE_FIELDS.items():
        for message, name in fields:
            assert name in _desc(message).fields_by_name, (vintage, message, name)


def test_foreign_field_message():
    msg = vintages.describe_foreign_field("SolverParameter", 52)
    assert "jacinto-0.15 sparse_mode" in msg and "jacinto-G1 weight_connect_mode" in msg
    assert "incompatible vintage" in msg
    assert "elu_param" in vintages.describe_foreign_field("LayerParameter", 140)
    assert vintages.describe_foreign_field("LayerParameter", 106) is None


def test_chosen_defaults():
    s = caffe_pb2.SolverParameter()
    assert s.sparsity_target == 0.0  # G3 meaning; G1 used 1.0
    assert s.ignore_shape_mismatch is True
    assert caffe_pb2.CConvolutionParameter().iter_stop == 10000  # official DNS
    assert caffe_pb2.CInnerProductParameter().iter_stop == 8000
    assert caffe_pb2.CConvolutionParameter().alpha_low == pytest.approx(0.9)
    assert caffe_pb2.DNSConvolutionParameter().alpha_low == pytest.approx(0.95)
    assert caffe_pb2.ParamSpec().breadth_decay_mult == 0.0


def test_fork_text_examples_parse():
    net = text_format.Parse("""
      quantize: true
      layer { name: "c" type: "Convolution"
        connectivity_mode: DISCONNECTED_GRPWISE
        param { lr_mult: 1 breadth_decay_mult: 1 kernel_shape_decay_mult: 1
                block_group_lasso { xdimen: 144 ydimen: 16 } regularization_type: "L1" }
        convolution_param { num_output: 16 conv_mode: LOWERED_CCNMM } }
      layer { name: "d" type: "DNSConvolution"
        dns_convolution_param { gamma: 1e-4 c_rate: 4 iter_stop: 20000 } }
      layer { name: "q" type: "INQConvolution"
        inq_convolution_param { portion: 0.0 portion: 0.5 num_quantum_values: 7 } }
      layer { name: "b" type: "BatchNorm"
        batch_norm_param { scale_bias: true scale_filler { type: "constant" value: 1 } } }
    """, caffe_pb2.NetParameter())
    assert net.layer[0].connectivity_mode == caffe_pb2.LayerParameter.DISCONNECTED_GRPWISE
    solver = text_format.Parse("""
      weight_connect_mode: WEIGHT_DISCONNECTED_ELTWISE threshold_weights: true
      sparse_mode: SPARSE_UPDATE breadth_decay: 1e-4 block_group_decay: 1e-3
      rampup_interval: 10 type: "LarsSGD" solver_type: LARSSGD
      quantization_param { precision: DYNAMIC_FIXED_POINT bw_layer_in: 8 }
    """, caffe_pb2.SolverParameter())
    assert solver.sparse_mode == caffe_pb2.SPARSE_UPDATE


# ---------------------------------------------------------------------------
# (d) every corpus file parses
# ---------------------------------------------------------------------------

def _corpus_files():
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCES.md")


def _parse_kind(text: str) -> str | None:
    for kind in ("NetParameter", "SolverParameter", "DeephiPruneConfig"):
        try:
            text_format.Parse(text, getattr(caffe_pb2, kind)())
            return kind
        except text_format.ParseError:
            continue
    return None


@pytest.mark.parametrize("path", _corpus_files(),
                         ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_file_parses(path):
    kind = _parse_kind(path.read_text(encoding="utf-8"))
    assert kind is not None, f"{path} parses as none of Net/Solver/DeephiPruneConfig"
    is_prune_config = "deephi" in path.parts and path.name.startswith("config")
    assert (kind == "DeephiPruneConfig") == is_prune_config


def test_corpus_present_or_skip():
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    assert len(_corpus_files()) > 200


# ---------------------------------------------------------------------------
# (e) golden binaries from BVLC Caffe parse with no unknown fields
# ---------------------------------------------------------------------------

def _unknown(msg, path=""):
    found = [(path, f.field_number) for f in unknown_fields.UnknownFieldSet(msg)]
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE:
            for i, sub in enumerate(value if fd.is_repeated else [value]):
                found += _unknown(sub, f"{path}.{fd.name}[{i}]")
    return found


def _golden(pattern):
    return sorted(GOLDEN.glob(pattern)) if GOLDEN.is_dir() else []


@pytest.mark.parametrize("path", _golden("*/*.caffemodel"), ids=lambda p: p.parent.name + "/" + p.name)
def test_golden_caffemodel(path):
    net = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert net.layer and not _unknown(net)


@pytest.mark.parametrize("path", _golden("solver_*/*.solverstate"), ids=lambda p: p.parent.name)
def test_golden_solverstate(path):
    state = caffe_pb2.SolverState.FromString(path.read_bytes())
    assert state.iter == 6 and state.history and not _unknown(state)


@pytest.mark.parametrize("path", _golden("*/*.prototxt"), ids=lambda p: p.parent.name + "/" + p.name)
def test_golden_prototxt(path):
    kind = "SolverParameter" if path.name.startswith("solver") else "NetParameter"
    text_format.Parse(path.read_text(), getattr(caffe_pb2, kind)())


def test_golden_present_or_skip():
    if not GOLDEN.is_dir():
        pytest.skip(f"shared golden files not found at {GOLDEN}")
    assert _golden("*/*.caffemodel")
