"""Solver registry and get_solver: Caffe's SolverRegistry.

The rule comes from the `type` string ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta",
"Adam", NNMC's "LarsSGD"), or from the legacy `solver_type` enum when `type` is not set. An
unknown type fails with one line naming the file, the line of `type` and the known types. Forks register their
rules with @register_solver("Name").
"""
import importlib
import os

from ..errors import CaffeError
from ..io.upgrade import SOLVER_TYPES
from ..proto import caffe_pb2

SOLVERS = {}
_RULE_MODULES = ("sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "lars_sgd")


def register_solver(name):
    def wrap(cls):
        cls.type = name
        SOLVERS[name] = cls
        return cls
    return wrap


def _load_all():
    for name in _RULE_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def solver_type(param):
    """The rule's name: `type`, else the legacy `solver_type` enum, else "SGD"."""
    if param.HasField("type"):
        return param.type
    if param.HasField("solver_type"):
        enum = caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)
        return SOLVER_TYPES.get(enum, enum)      # Caffe's UpgradeSolverType
    return param.type


def solver_class(param, where):
    _load_all()
    name = solver_type(param)
    try:
        return SOLVERS[name]
    except KeyError:
        known = ", ".join(sorted(SOLVERS))
        field = "type" if param.HasField("type") else "solver_type"
        raise where(field, f"Unknown solver type: {name} (known types: {known})") from None


def get_solver(path_or_param, path=None):
    """A solver of the rule the parameter names (pycaffe's caffe.get_solver).

    `path_or_param` is a solver.prototxt path or a SolverParameter; with a parameter, `path`
    (optional) is the file it came from, for error messages and relative net files.
    """
    from ..io.prototxt import read_solver_param
    from .validate import FieldLines, Where
    if isinstance(path_or_param, (str, os.PathLike)):
        path = path_or_param
        param = read_solver_param(path)
    elif isinstance(path_or_param, caffe_pb2.SolverParameter):
        param = path_or_param
    else:
        raise CaffeError(f"get_solver takes a solver.prototxt path or a SolverParameter, "
                         f"not {type(path_or_param).__name__}")
    cls = solver_class(param, Where(path, FieldLines(path)))
    return cls(param, path=path)
