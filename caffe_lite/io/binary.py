"""Caffe's binary files: .caffemodel (NetParameter), .solverstate (SolverState),
.binaryproto (BlobProto, e.g. a mean file).

Reading is ReadProtoFromBinaryFile (no size limit, as Caffe lifts protobuf's to INT_MAX) and,
for nets, the same upgrades as ReadNetParamsFromBinaryFileOrDie (V0/V1 caffemodels).
After parsing, every message is checked for fields our schema does not know: a field number
that some Caffe fork used (caffe_lite.proto.vintages) means the file comes from that fork's
vintage and cannot be read correctly, which is an error; any other unknown field is a warning.
Files ending in .h5 are Caffe's HDF5 snapshots (caffe_lite.io.hdf5).
"""
import os

from google.protobuf.message import DecodeError

from ..errors import CaffeError
from ..log import LOG
from ..proto.vintages import describe_foreign_field
from . import upgrade as _upgrade
from .input_file import read_input
from .atomic import atomic_write

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # protobuf < 4.21
    UnknownFieldSet = None


def _pb2():
    from ..proto import caffe_pb2
    return caffe_pb2


def is_hdf5_path(path):
    return os.fspath(path).endswith(".h5")


def read_bytes(path, what="file"):
    return read_input(path, what)


def parse_binary(data, message, path):
    """ParseFromString into `message`, then the unknown-field check. Returns `message`."""
    kind = message.DESCRIPTOR.name
    if not data:
        raise CaffeError(f"file is empty (expected a binary {kind})", path)
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise CaffeError(f"not a valid binary {kind} (truncated or corrupt){_text_hint(data)}",
                         path) from None
    if not message.ListFields() and _unknown(message):
        # Bytes that happen to decode, but only into fields nobody defined: garbage.
        raise CaffeError(f"not a valid binary {kind} (truncated or corrupt){_text_hint(data)}",
                         path)
    check_unknown_fields(message, path)
    check_text_fields(message, path)
    return message


def _text_hint(data):
    head = data[:256]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if text.lstrip()[:1].isalpha() or text.lstrip().startswith("#"):
        return "; it looks like a text prototxt"
    return ""


def _unknown(message):
    if UnknownFieldSet is None:
        return []
    try:
        return list(UnknownFieldSet(message))
    except Exception:  # an implementation without unknown-field access
        return []


def _message_name(desc):
    full = desc.full_name
    package = desc.file.package
    return full[len(package) + 1:] if package and full.startswith(package + ".") else full


def _messages(message):
    """`message` and every message inside it, depth first."""
    stack = [message]
    while stack:
        msg = stack.pop()
        yield msg
        for desc, value in msg.ListFields():
            if desc.message_type is None:
                continue
            if desc.is_repeated:
                if desc.message_type.GetOptions().map_entry:
                    continue
                stack.extend(reversed(list(value)))
            else:
                stack.append(value)


def unknown_fields(message):
    """[(message name, field number, wire type)] of every unknown field, depth first."""
    return [(_message_name(msg.DESCRIPTOR), field.field_number, field.wire_type)
            for msg in _messages(message) for field in _unknown(msg)]


def check_text_fields(message, path):
    """proto2 does not check that a string field holds UTF-8: one that does not reads back as
    bytes, and fails wherever it is used (a file name, a layer name). Refuse it here, naming
    the field."""
    for msg in _messages(message):
        for desc, value in msg.ListFields():
            if desc.type != desc.TYPE_STRING:
                continue
            if any(isinstance(v, bytes) for v in (value if desc.is_repeated else (value,))):
                raise CaffeError(f"field '{_message_name(msg.DESCRIPTOR)}.{desc.name}' is not "
                                 "UTF-8 text (corrupt file?)", path)


def check_unknown_fields(message, path):
    """Error for a field number from a known fork vintage; warning for any other unknown."""
    warned = set()
    for name, number, wire_type in unknown_fields(message):
        foreign = describe_foreign_field(name, number)
        if foreign:
            raise CaffeError(f"{foreign}; it cannot be read with this schema", path)
        if (name, number) not in warned:
            warned.add((name, number))
            LOG.warning("%s: ignoring unknown field number %d (wire type %d) in %s",
                        path, number, wire_type, name)


# ---------------------------------------------------------------------------------------------

def read_net_binary(path, upgrade=True):
    """A binary .caffemodel as a NetParameter, upgraded as ReadNetParamsFromBinaryFileOrDie
    does (V0/V1 layers, input fields, ...)."""
    param = parse_binary(read_bytes(path), _pb2().NetParameter(), path)
    if upgrade:
        _upgrade.upgrade_net_param(param, os.fspath(path))
    return param


def read_solver_state(path):
    """A .solverstate (binary) or .solverstate.h5 as a SolverState message."""
    if is_hdf5_path(path):
        from .hdf5 import read_solver_state_hdf5
        return read_solver_state_hdf5(path)
    return parse_binary(read_bytes(path), _pb2().SolverState(), path)


def read_blob_proto(path):
    """A .binaryproto (one BlobProto, e.g. a mean file)."""
    return parse_binary(read_bytes(path), _pb2().BlobProto(), path)


def write_binary(path, message):
    """Serialize `message` to `path` atomically (WriteProtoToBinaryFile)."""
    atomic_write(path, message.SerializeToString())


def read_any_net(path):
    """Trained weights as a NetParameter: binary .caffemodel, or .caffemodel.h5 (layer names
    and blobs only; see caffe_lite.io.hdf5.read_net_hdf5_param)."""
    if is_hdf5_path(path):
        from .hdf5 import read_net_hdf5_param
        return read_net_hdf5_param(path)
    try:
        return read_net_binary(path)
    except CaffeError as err:
        fallback = _fork_weights(path)
        if fallback is None:
            raise
        LOG.warning("%s: %s; its layers' names and blobs are read, their other fields "
                    "skipped", path, str(err).split(": ", 1)[-1].split(";")[0])
        return fallback


def _fork_weights(path):
    """A fork's caffemodel whose layer fields collide with ours, read as names and blobs
    only (io/weights_view.py); None when that does not parse either."""
    from .weights_view import weights_only
    try:
        data = weights_only(read_bytes(path))
        param = _pb2().NetParameter()
        param.ParseFromString(data)
    except (CaffeError, ValueError, DecodeError, RuntimeError):
        return None
    if not param.layer or unknown_fields(param):
        return None
    check_text_fields(param, path)
    _upgrade.upgrade_net_param(param, os.fspath(path))
    return param


def read_net_weights(path):
    """[(layer name, [float32 arrays])] from either weights format, for copying into a net."""
    if is_hdf5_path(path):
        from .hdf5 import read_net_hdf5
        return read_net_hdf5(path)
    import numpy as np
    from .blobs import blob_proto_to_array
    param = read_net_binary(path)
    return [(lp.name, [blob_proto_to_array(bp, dtype=np.float32,
                                           name=f"{path}: layer {lp.name} blob {i}")
                       for i, bp in enumerate(lp.blobs)]) for lp in param.layer]
