"""Upstream's upgrade rules for old nets and solvers (src/caffe/util/upgrade_proto.cpp).

`upgrade_net_param` runs, in Caffe's order and under Caffe's conditions:
  1. V0 -> V1  (`layers { layer { type: "conv" ... } }`; "padding" layers fold into the
     conv/pool they feed);
  2. data transformation (`scale`, `mean_file`, `crop_size`, `mirror` in Data/ImageData/
     WindowData params move to `transform_param`);
  3. V1 -> V2  (`layers { type: CONVOLUTION blobs_lr: 1 weight_decay: 1 }` ->
     `layer { type: "Convolution" param { lr_mult: 1 decay_mult: 1 } }`);
  4. input fields (`input:` + `input_dim:`/`input_shape`) -> one "Input" layer in front;
  5. BatchNorm layers that declare three `param`s get lr_mult 0 and decay_mult 0 on each.
`upgrade_solver_param` turns the `solver_type` enum into the `type` string.

Where Caffe dies (LOG(FATAL)/CHECK) we raise CaffeError; where Caffe logs an error and goes
on ("continuing anyway") we log the same and return False, as UpgradeNetAsNeeded does.
The rules are data (tables below), so a reader can check them against upstream line by line.
"""
from collections import namedtuple
from functools import cache

from ..errors import CaffeError
from ..log import LOG


@cache
def _pb2():
    # Imported on first use, and cached: the per-layer loops below call this.
    from ..proto import caffe_pb2
    return caffe_pb2


# V0 `type` strings -> V1LayerParameter.LayerType names (UpgradeV0LayerType).
V0_LAYER_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0LayerParameter field -> {V0 type: (V1 sub-message, field)}; "*" = any layer type.
# Order is upstream's order of checks (it decides the order of the error lines).
V0_FIELD_RULES = [
    ("num_output", {"conv": ("convolution_param", "num_output"),
                    "innerproduct": ("inner_product_param", "num_output")}),
    ("biasterm", {"conv": ("convolution_param", "bias_term"),
                  "innerproduct": ("inner_product_param", "bias_term")}),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler"),
                       "innerproduct": ("inner_product_param", "weight_filler")}),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler"),
                     "innerproduct": ("inner_product_param", "bias_filler")}),
    ("pad", {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")}),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size"),
                    "pool": ("pooling_param", "kernel_size")}),
    ("group", {"conv": ("convolution_param", "group")}),
    ("stride", {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")}),
    ("pool", {"pool": ("pooling_param", "pool")}),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")}),
    ("local_size", {"lrn": ("lrn_param", "local_size")}),
    ("alpha", {"lrn": ("lrn_param", "alpha")}),
    ("beta", {"lrn": ("lrn_param", "beta")}),
    ("k", {"lrn": ("lrn_param", "k")}),
    ("source", {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
                "images": ("image_data_param", "source"),
                "window_data": ("window_data_param", "source"),
                "infogain_loss": ("infogain_loss_param", "source")}),
    ("scale", {"*": ("transform_param", "scale")}),
    ("meanfile", {"*": ("transform_param", "mean_file")}),
    ("batchsize", {"data": ("data_param", "batch_size"),
                   "hdf5_data": ("hdf5_data_param", "batch_size"),
                   "images": ("image_data_param", "batch_size"),
                   "window_data": ("window_data_param", "batch_size")}),
    ("cropsize", {"*": ("transform_param", "crop_size")}),
    ("mirror", {"*": ("transform_param", "mirror")}),
    ("rand_skip", {"data": ("data_param", "rand_skip"),
                   "images": ("image_data_param", "rand_skip")}),
    ("shuffle_images", {"images": ("image_data_param", "shuffle")}),
    ("new_height", {"images": ("image_data_param", "new_height")}),
    ("new_width", {"images": ("image_data_param", "new_width")}),
    ("concat_dim", {"concat": ("concat_param", "concat_dim")}),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")}),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")}),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")}),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad")}),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode")}),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None)}),
]
# Upstream's log names the V1 field for this one, not the V0 one.
_V0_LOG_NAME = {"shuffle_images": "shuffle"}

# V1LayerParameter.LayerType names -> V2 type strings (UpgradeV1LayerType).
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# The V1 *_param messages that UpgradeV1LayerParameter copies over unchanged.
V1_COPIED_PARAMS = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
]

# V1 layer types whose data params may carry the old transformation fields.
DATA_TRANSFORM_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                         "WINDOW_DATA": "window_data_param"}
DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam",
                "LARSSGD": "LarsSGD"}       # NNMC


# ---------------------------------------------------------------------------------------------
# Tests for what a net needs

def net_needs_v0_to_v1_upgrade(param):
    return any(lp.HasField("layer") for lp in param.layers)


def net_needs_v1_to_v2_upgrade(param):
    return len(param.layers) > 0


def net_needs_data_upgrade(param):
    params = _data_transform_params()
    for lp in param.layers:
        field = params.get(lp.type)
        if field is not None:
            sub = getattr(lp, field)
            if any(sub.HasField(f) for f in DATA_TRANSFORM_FIELDS):
                return True
    return False


@cache
def _data_transform_params():
    """DATA_TRANSFORM_PARAMS keyed by the LayerType number (what `lp.type` reads)."""
    enum = _pb2().V1LayerParameter.LayerType
    return {enum.Value(name): field for name, field in DATA_TRANSFORM_PARAMS.items()}


def net_needs_input_upgrade(param):
    return len(param.input) > 0


def net_needs_batch_norm_upgrade(param):
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in param.layer)


def net_needs_upgrade(param):
    """Caffe's NetNeedsUpgrade: does upgrade_net_proto_* have anything to do?"""
    return (net_needs_v0_to_v1_upgrade(param) or net_needs_v1_to_v2_upgrade(param)
            or net_needs_data_upgrade(param) or net_needs_input_upgrade(param)
            or net_needs_batch_norm_upgrade(param))


def solver_needs_type_upgrade(param):
    return param.HasField("solver_type")


# ---------------------------------------------------------------------------------------------
# The whole upgrade

def upgrade_net_param(param, path=""):
    """Upgrade `param` in place as Caffe's UpgradeNetAsNeeded. Returns False (after logging
    the problems) when some old field had no place in the new format, True otherwise."""
    success = True
    if net_needs_v0_to_v1_upgrade(param):
        LOG.info("Attempting to upgrade input file specified using deprecated "
                 "V0LayerParameter: %s", path)
        if not upgrade_v0_net(param, path):
            success = False
            LOG.error("Warning: had one or more problems upgrading V0NetParameter to "
                      "NetParameter (see above); continuing anyway.")
        else:
            LOG.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        LOG.warning("Note that future Caffe releases will not support V0NetParameter; use "
                    "./build/tools/upgrade_net_proto_text for prototxt and "
                    "./build/tools/upgrade_net_proto_binary for model weights upgrade this "
                    "and any other net protos to the new format.")
    for step in LATER_STEPS:
        if step.needs(param):
            LOG.info(step.attempt, path)
            if step.run(param, path) is False:
                success = False
                LOG.error(step.failure)
            else:
                LOG.info(step.success)
            if step.note:
                LOG.warning(step.note)
    return success


def upgrade_solver_param(param, path=""):
    """Upgrade `param` in place as Caffe's UpgradeSolverAsNeeded. Returns success."""
    if not solver_needs_type_upgrade(param):
        return True
    LOG.info("Attempting to upgrade input file specified using deprecated 'solver_type' "
             "field (enum)': %s", path)
    upgrade_solver_type(param, path)
    LOG.info("Successfully upgraded file specified using deprecated 'solver_type' field "
             "(enum) to 'type' field (string).")
    LOG.warning("Note that future Caffe releases will only support 'type' field (string) "
                "for a solver's type.")
    return True


def upgrade_solver_type(param, path=""):
    if param.HasField("solver_type") and param.HasField("type"):
        raise CaffeError("Failed to upgrade solver: old solver_type field (enum) and new type "
                         "field (string) cannot be both specified in solver proto text.",
                         path or None)
    if not param.HasField("solver_type"):
        LOG.error("Warning: solver type already up to date. ")
        return False
    enum = _pb2().SolverParameter.SolverType
    name = enum.Name(param.solver_type)
    if name not in SOLVER_TYPES:
        raise CaffeError(f"Unknown SolverParameter solver_type: {name}", path or None)
    param.type = SOLVER_TYPES[name]
    param.ClearField("solver_type")
    return True


# ---------------------------------------------------------------------------------------------
# V0 -> V1

def upgrade_v0_net(param, path=""):
    """UpgradeV0Net, in place: fold padding layers, then convert each V0 layer."""
    pb2 = _pb2()
    padded = pb2.NetParameter()
    upgrade_v0_padding_layers(param, padded, path)
    ok = True
    param.Clear()
    if padded.HasField("name"):
        param.name = padded.name
    for lp in padded.layers:
        ok &= upgrade_v0_layer_parameter(lp, param.layers.add(), path)
    param.input.extend(padded.input)
    param.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        param.force_backward = padded.force_backward
    return ok


def upgrade_v0_padding_layers(param, out, path=""):
    """UpgradeV0PaddingLayers: drop "padding" layers, moving their pad into the conv or
    pool layer they feed (Caffe only ever defined that case)."""
    out.CopyFrom(param)
    out.ClearField("layers")
    last_top = {name: -1 for name in param.input}
    for i, conn in enumerate(param.layers):
        v0 = conn.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise CaffeError(f"Unknown blob input {blob} to layer {j}", path or None)
            top_idx = last_top[blob]
            if top_idx == -1:
                continue
            source = param.layers[top_idx]
            if source.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise CaffeError("Padding layer input to non-convolutional / non-pooling "
                                     f"layer type {v0.type}", path or None)
                if len(conn.bottom) != 1:
                    raise CaffeError("Conv Layer takes a single blob as input.", path or None)
                if len(source.bottom) != 1:
                    raise CaffeError("Padding Layer takes a single blob as input.",
                                     path or None)
                if len(source.top) != 1:
                    raise CaffeError("Padding Layer produces a single blob as output.",
                                     path or None)
                target = out.layers[len(out.layers) - 1]
                target.layer.pad = source.layer.pad
                target.bottom[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i


def upgrade_v0_layer_type(type_name, path=""):
    if type_name not in V0_LAYER_TYPES:
        raise CaffeError(f"Unknown layer name: {type_name}", path or None)
    return _pb2().V1LayerParameter.LayerType.Value(V0_LAYER_TYPES[type_name])


def upgrade_v0_layer_parameter(conn, out, path=""):
    """UpgradeV0LayerParameter: one `layers { layer { ... } bottom top }` -> V1 layer."""
    ok = True
    out.Clear()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return ok
    v0 = conn.layer
    if v0.HasField("name"):
        out.name = v0.name
    type_name = v0.type
    if v0.HasField("type"):
        out.type = upgrade_v0_layer_type(type_name, path)
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in V0_FIELD_RULES:
        if not v0.HasField(field):
            continue
        target = targets.get(type_name) or targets.get("*")
        if target is None:
            LOG.error("Unknown parameter %s for layer type %s",
                      _V0_LOG_NAME.get(field, field), type_name)
            ok = False
            continue
        sub_name, sub_field = target
        value = getattr(v0, field)
        if field == "pool":
            pool_enum = _pb2().PoolingParameter.PoolMethod
            name = _pb2().V0LayerParameter.PoolMethod.Name(value)
            if name not in pool_enum.keys():
                LOG.error("Unknown pool method %s", value)
                ok = False
                continue
            value = pool_enum.Value(name)
        _assign(getattr(out, sub_name), sub_field, value)
    return ok


def _assign(message, field, value):
    """message.field = value, for singular, repeated (append) or message fields
    (field None: copy `value` into `message` itself)."""
    if field is None:
        message.CopyFrom(value)
        return
    desc = message.DESCRIPTOR.fields_by_name[field]
    if desc.message_type is not None:
        getattr(message, field).CopyFrom(value)
    elif desc.is_repeated:
        getattr(message, field).append(value)
    else:
        setattr(message, field, value)


# ---------------------------------------------------------------------------------------------
# Data transformation fields

def upgrade_net_data_transformation(param):
    """UpgradeNetDataTransformation: old fields of data params -> transform_param."""
    params = _data_transform_params()
    for lp in param.layers:
        field = params.get(lp.type)
        if field is None:
            continue
        sub = getattr(lp, field)
        for name in DATA_TRANSFORM_FIELDS:
            if sub.HasField(name):
                setattr(lp.transform_param, name, getattr(sub, name))
                sub.ClearField(name)


# ---------------------------------------------------------------------------------------------
# V1 -> V2

def upgrade_v1_net(param, path=""):
    """UpgradeV1Net, in place: every `layers` entry becomes a `layer`; existing `layer`
    entries are dropped (with an error), as upstream does."""
    ok = True
    dropped = len(param.layer)
    if dropped:
        LOG.error("Input NetParameter to be upgraded already specifies 'layer' fields; these "
                  "will be ignored for the upgrade.")
        ok = False
    # The new layers are built where they end up (a copy of each costs as much again), after
    # the dropped ones; on an error `param` is left as it was.
    layers = param.layer
    try:
        for i, v1 in enumerate(param.layers):
            if not upgrade_v1_layer_parameter(v1, layers.add(), path):
                LOG.error("Upgrade of input layer %d failed.", i)
                ok = False
    except BaseException:
        del layers[dropped:]
        raise
    del layers[:dropped]
    param.ClearField("layers")
    return ok


def upgrade_v1_layer_type(type_value, path=""):
    name = _v1_type_strings().get(type_value)
    if name is None:
        raise CaffeError(f"Unknown V1LayerParameter layer type: {type_value}", path or None)
    return name


@cache
def _v1_type_strings():
    """{LayerType number: V2 type string} for the types V1_LAYER_TYPES knows."""
    enum = _pb2().V1LayerParameter.LayerType
    strings = {}
    for number in enum.values():
        name = enum.Name(number)
        if name in V1_LAYER_TYPES:
            strings.setdefault(number, V1_LAYER_TYPES[name])
    return strings


# V1LayerParameter fields that keep their name and value in LayerParameter.
_V1_SAME_REPEATED = frozenset(["bottom", "top", "include", "exclude", "blobs", "loss_weight"])
_V1_SAME_PARAMS = frozenset(V1_COPIED_PARAMS)
# V1LayerParameter fields that become one ParamSpec field per blob (param[i].<field>).
_V1_PARAM_SPEC_FIELDS = {"param": "name", "blob_share_mode": "share_mode",
                         "blobs_lr": "lr_mult", "weight_decay": "decay_mult"}


def upgrade_v1_layer_parameter(v1, lp, path=""):
    """UpgradeV1LayerParameter: blobs_lr -> param.lr_mult, weight_decay -> param.decay_mult,
    param (names) -> param.name, blob_share_mode -> param.share_mode, enum type -> string.

    Walks only the fields `v1` sets (ListFields, in field-number order, so `type` is checked
    before `blob_share_mode` as upstream does); other V1 fields are dropped, as upstream does.
    """
    lp.Clear()
    ok = True
    spec_values = {}
    has_v0_layer = False
    for field, value in v1.ListFields():
        name = field.name
        if name in _V1_SAME_REPEATED:
            if len(value) == 1:          # the usual one bottom, one top: append is faster
                getattr(lp, name).append(value[0])
            else:
                getattr(lp, name).extend(value)
        elif name == "name":
            lp.name = value
        elif name == "type":
            lp.type = upgrade_v1_layer_type(value, path)
        elif name in _V1_PARAM_SPEC_FIELDS:
            spec_values[_V1_PARAM_SPEC_FIELDS[name]] = value
        elif name in _V1_SAME_PARAMS:
            getattr(lp, name).CopyFrom(value)
        elif name == "layer":
            has_v0_layer = True
    if spec_values:
        _upgrade_param_specs(spec_values, lp, path)
    if has_v0_layer:
        LOG.error("Input NetParameter has V0 layer -- ignoring.")
        ok = False
    return ok


def _upgrade_param_specs(spec_values, lp, path):
    """lp.param[i].<field> = values[i] for each {ParamSpec field: values}; as many ParamSpecs
    as the longest list."""
    if "share_mode" in spec_values:
        modes = _share_modes()
        for mode in spec_values["share_mode"]:
            if mode not in modes:
                raise CaffeError(f"Unknown blob_share_mode: {mode}", path or None)
        spec_values["share_mode"] = [modes[mode] for mode in spec_values["share_mode"]]
    for _ in range(max(len(values) for values in spec_values.values())):
        lp.param.add()
    for attr, values in spec_values.items():
        for spec, value in zip(lp.param, values):
            setattr(spec, attr, value)


@cache
def _share_modes():
    """{V1 DimCheckMode number: ParamSpec DimCheckMode number} for STRICT and PERMISSIVE."""
    pb2 = _pb2()
    v1_mode, mode = pb2.V1LayerParameter.DimCheckMode, pb2.ParamSpec.DimCheckMode
    return {v1_mode.Value(name): mode.Value(name) for name in ("STRICT", "PERMISSIVE")}


# ---------------------------------------------------------------------------------------------
# Input fields, BatchNorm

def upgrade_net_input(param, path=""):
    """UpgradeNetInput: `input` + `input_shape`/`input_dim` -> one Input layer, first.

    A net with `input` alone (a legacy caffemodel) just loses the field."""
    has_shape = len(param.input_shape) > 0
    has_dim = len(param.input_dim) > 0
    if has_shape or has_dim:
        n = len(param.input)
        if has_shape and len(param.input_shape) < n:
            raise CaffeError(f"{n} inputs but {len(param.input_shape)} input_shape entries",
                             path or None)
        if not has_shape and len(param.input_dim) < 4 * n:
            raise CaffeError(f"{n} inputs need {4 * n} input_dim values (4 per input), got "
                             f"{len(param.input_dim)}", path or None)
        layer = _pb2().LayerParameter(name="input", type="Input")
        for i, top in enumerate(param.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(param.input_shape[i])
            else:
                shape.dim.extend(param.input_dim[4 * i:4 * i + 4])
        param.layer.insert(0, layer)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


def upgrade_net_batch_norm(param):
    """UpgradeNetBatchNorm: the old BatchNorm definition declared three params; their
    statistics must not learn, so lr_mult and decay_mult become 0 (other fields stay)."""
    for lp in param.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            for spec in lp.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------------------------------------
# The steps after V0 -> V1, in UpgradeNetAsNeeded's order, with its log lines. `run` returns
# False when some old field had no place in the new format (None or True: done).
UpgradeStep = namedtuple("UpgradeStep", "name needs run attempt success failure note")

LATER_STEPS = (
    UpgradeStep(
        "data", net_needs_data_upgrade, lambda param, path: upgrade_net_data_transformation(param),
        "Attempting to upgrade input file specified using deprecated transformation "
        "parameters: %s",
        "Successfully upgraded file specified using deprecated data transformation "
        "parameters.", None,
        "Note that future Caffe releases will only support transform_param messages for "
        "transformation fields."),
    UpgradeStep(
        "v1", net_needs_v1_to_v2_upgrade, upgrade_v1_net,
        "Attempting to upgrade input file specified using deprecated V1LayerParameter: %s",
        "Successfully upgraded file specified using deprecated V1LayerParameter",
        "Warning: had one or more problems upgrading V1LayerParameter (see above); "
        "continuing anyway.", None),
    UpgradeStep(
        "input", net_needs_input_upgrade, upgrade_net_input,
        "Attempting to upgrade input file specified using deprecated input fields: %s",
        "Successfully upgraded file specified using deprecated input fields.", None,
        "Note that future Caffe releases will only support input layers and not input "
        "fields."),
    UpgradeStep(
        "batch_norm", net_needs_batch_norm_upgrade,
        lambda param, path: upgrade_net_batch_norm(param),
        "Attempting to upgrade batch norm layers using deprecated params: %s",
        "Successfully upgraded batch norm layers using deprecated params.", None, None),
)
