"""Caffe's upgrade tools: upgrade_net_proto_text, upgrade_net_proto_binary,
upgrade_solver_proto_text (tools/upgrade_*.cpp).

`caffe-lite upgrade_net_proto_text IN OUT` reads IN, applies upstream's upgrades and writes
OUT. Unlike Caffe, a file that cannot be fully upgraded is an error and OUT is left as it was
(Caffe writes the partial result and exits 1). OUT may be IN: the write is atomic. A net of
several MB is upgraded on every core (io/parallel_upgrade.py; CAFFE_LITE_NUM_THREADS=1 keeps
it to one), with the same result.
"""
import os

from google.protobuf import text_format

from ..cli import command, parse_flags, usage_line
from ..errors import CaffeError
from ..io import binary, fast_text, parallel_upgrade, prototxt, upgrade
from ..io.atomic import atomic_write
from ..log import LOG
from ..threads import get_num_threads


def _args(argv, name):
    _, positional = parse_flags(argv, [])
    if len(positional) != 2:
        raise CaffeError(usage_line(name))
    _check_writable(positional[1])
    return positional


def _check_writable(path):
    """Fail before any work (and any log line) when OUT cannot be written."""
    if os.path.isdir(path):
        raise CaffeError("is a directory, cannot write a file there", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CaffeError("cannot write: No such file or directory", path)
    if not os.access(folder, os.W_OK):
        raise CaffeError("cannot write: Permission denied", path)


def _read_net_text(path):
    text = prototxt.read_text_file(path)
    if not text.strip():
        raise CaffeError("file is empty (expected a NetParameter)", path)
    return text


def _upgrade_net(param, path):
    if not upgrade.net_needs_upgrade(param):
        return False
    if not upgrade.upgrade_net_param(param, path):
        raise CaffeError("encountered error(s) while upgrading (see the log above); "
                         "nothing written", path)
    return True


@command("upgrade_net_proto_text", "upgrade an old (V0/V1, input:) net prototxt: IN OUT",
         "v0_net_proto_file_in net_proto_file_out")
def upgrade_net_proto_text(argv):
    src, dst = _args(argv, "upgrade_net_proto_text")
    text = _read_net_text(src)
    result = parallel_upgrade.upgrade_text(text, src, get_num_threads())
    if result is None:
        from ..proto import caffe_pb2
        param = prototxt.parse_text(text, caffe_pb2.NetParameter(), src)
        result = _upgrade_net(param, src), fast_text.to_string(param)
    changed, printed = result
    if not changed:
        LOG.warning("File already in latest proto format: %s", src)
    atomic_write(dst, printed.encode("utf-8"))
    LOG.info("Wrote upgraded NetParameter text proto to %s", dst)
    return 0


@command("upgrade_net_proto_binary", "upgrade an old (V0/V1) binary .caffemodel: IN OUT",
         "v0_net_proto_file_in net_proto_file_out")
def upgrade_net_proto_binary(argv):
    src, dst = _args(argv, "upgrade_net_proto_binary")
    param = binary.read_net_binary(src, upgrade=False)
    if not _upgrade_net(param, src):
        LOG.warning("File already in V1 proto format: %s", src)
    binary.write_binary(dst, param)
    LOG.info("Wrote upgraded NetParameter binary proto to %s", dst)
    return 0


@command("upgrade_solver_proto_text", "upgrade an old (solver_type enum) solver: IN OUT",
         "solver_proto_file_in solver_proto_file_out")
def upgrade_solver_proto_text(argv):
    src, dst = _args(argv, "upgrade_solver_proto_text")
    text = prototxt.read_text_file(src)
    if not text.strip():
        raise CaffeError("file is empty (expected a SolverParameter)", src)
    from ..proto import caffe_pb2
    param = prototxt.parse_text(text, caffe_pb2.SolverParameter(), src)
    if upgrade.solver_needs_type_upgrade(param):
        upgrade.upgrade_solver_param(param, src)
    else:
        LOG.warning("File already in latest proto format: %s", src)
    atomic_write(dst, text_format.MessageToString(param).encode("utf-8"))
    LOG.info("Wrote upgraded SolverParameter text proto to %s", dst)
    return 0
