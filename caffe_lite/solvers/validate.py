"""Solver parameter checks that fail with one line naming the file, the line and the field.

Caffe CHECKs most of these lazily (some only at the first iteration that needs them); we
check them when the solver is built, so a bad solver.prototxt fails before any work is done.
`FieldLines` finds where a top-level field sits in the prototxt text, since protobuf's text
parser keeps no positions.
"""
import os

from ..errors import CaffeError
from ..io.input_file import file_problem
from ..io.prototxt import top_level_fields
from ..proto import caffe_pb2
from . import lr_policy

TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")


class FieldLines:
    """1-based line numbers of each top-level field occurrence in a prototxt file."""

    def __init__(self, path=None, text=None):
        self.lines = {}
        if text is None and path is not None:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                text = None
        if text:
            for name, line in top_level_fields(text):
                self.lines.setdefault(name, []).append(line)

    def line(self, field, index=0):
        found = self.lines.get(field)
        if not found:
            return None
        return found[min(index, len(found) - 1)]


class Where:
    """Builds the CaffeError for a field: `path:line: field: message`."""

    def __init__(self, path=None, lines=None):
        self.path = os.fspath(path) if path is not None else None
        self.lines = lines if lines is not None else FieldLines(path)

    def __call__(self, field, message, index=0):
        line = self.lines.line(field, index) if field else None
        text = f"{field}: {message}" if field else message
        return CaffeError(text, path=self.path, line=line)


def resolve_net_file(path, solver_path):
    """Caffe opens net files relative to the working directory; failing that we try the
    solver file's directory (where Caffe would have failed)."""
    if os.path.exists(path) or os.path.isabs(path) or solver_path is None:
        return path
    beside = os.path.join(os.path.dirname(os.fspath(solver_path)), path)
    return beside if os.path.exists(beside) else path


def validate_solver_param(param, where, solver_path=None):
    """The checks of Caffe's Solver::Init, InitTrainNet and InitTestNets, made up front."""
    given = [f for f in TRAIN_NET_FIELDS if param.HasField(f)]
    names = ", ".join(TRAIN_NET_FIELDS)
    if not given:
        raise where(None, "SolverParameter must specify a train net using one of these "
                          f"fields: {names}")
    if len(given) > 1:
        raise where(given[1], "SolverParameter must not contain more than one of these fields "
                              f"specifying a train_net: {names} (found {', '.join(given)})")
    for field in ("net", "train_net"):
        if param.HasField(field):
            _check_file(getattr(param, field), field, 0, where, solver_path)
    for i, test_net in enumerate(param.test_net):
        _check_file(test_net, "test_net", i, where, solver_path)

    generic = int(param.HasField("net_param")) + int(param.HasField("net"))
    n_test_nets = len(param.test_net_param) + len(param.test_net)
    n_iter = len(param.test_iter)
    if (n_iter < n_test_nets) if generic else (n_iter != n_test_nets):
        field = "test_iter" if n_iter else ("test_net" if param.test_net else "test_net_param")
        raise where(field, "test_iter must be specified for each test network "
                           f"({n_test_nets} test net(s), {n_iter} test_iter)")
    instances = n_iter if generic else n_test_nets
    if param.test_state and len(param.test_state) != instances:
        raise where("test_state", "test_state must be unspecified or specified once per test "
                                  f"net ({instances} test net(s), {len(param.test_state)} "
                                  "test_state)")
    if instances and param.test_interval <= 0:
        field = "test_interval" if param.HasField("test_interval") else "test_iter"
        raise where(field, f"test_interval must be > 0 when test nets are run ({instances} "
                           f"test net(s) from test_iter; test_interval = {param.test_interval})")
    for i, it in enumerate(param.test_iter):
        if it < 0:
            raise where("test_iter", f"test_iter must not be negative (got {it})", i)

    if param.base_lr < 0:
        raise where("base_lr", f"base_lr must not be negative (got {param.base_lr:g})")
    if param.average_loss < 1:
        raise where("average_loss", f"average_loss should be >= 1 (got {param.average_loss})")
    if param.iter_size < 1:
        raise where("iter_size", f"iter_size must be >= 1 (got {param.iter_size})")
    for field in ("display", "snapshot", "test_interval"):
        if getattr(param, field) < 0:
            raise where(field, f"{field} must not be negative (got {getattr(param, field)})")
    if param.snapshot and not param.snapshot_prefix:
        raise where("snapshot", "snapshot is specified but snapshot_prefix is not")
    if (param.snapshot_format == caffe_pb2.SolverParameter.HDF5
            and (param.snapshot or param.snapshot_after_train)):
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise where("snapshot_format", "HDF5 snapshots need h5py: pip install "
                                           "'caffe-lite[hdf5]'") from None
    lr_policy.validate_lr_policy(param, where)
    if param.weight_decay:
        from .regularizers import REGULARIZERS
        if param.regularization_type not in REGULARIZERS:
            known = ", ".join(sorted(REGULARIZERS))
            raise where("regularization_type", "Unknown regularization type: "
                        f"{param.regularization_type} (known types: {known})")


def _check_file(path, field, index, where, solver_path):
    resolved = resolve_net_file(path, solver_path)
    problem = file_problem(resolved)
    if problem:
        raise where(field, f"cannot open {field} file '{path}' ({problem})", index)
