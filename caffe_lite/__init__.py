"""caffe-lite: a Caffe-compatible CNN training engine in pure Python.

`import caffe_lite as caffe` gives pycaffe's entry points:
  caffe.Net(model, caffe.TEST), caffe.set_mode_cpu(), caffe.set_random_seed(0),
  caffe.layer_type_list(), caffe.proto.caffe_pb2, caffe.io.blobproto_to_array(...)
and caffe.set_num_threads(n) / caffe.get_num_threads() (caffe_lite/threads.py).
"""
__version__ = "0.1.0"

import importlib

from .threads import get_num_threads, set_num_threads

# Everything else loads on first use (PEP 562), so that importing the package imports
# neither NumPy nor anything that loads OpenBLAS: the caffe-lite command configures its own
# process before that (threads.configure_command_process).
_LAZY = {
    "io": (".io", None),
    "proto": (".proto", None),
    "TEST": (".common", "TEST"),
    "TRAIN": (".common", "TRAIN"),
    "set_device": (".common", "set_device"),
    "set_mode_cpu": (".common", "set_mode_cpu"),
    "set_mode_gpu": (".common", "set_mode_gpu"),
    "set_random_seed": (".common", "set_random_seed"),
    "layer_type_list": (".layers", "layer_types"),
    "Layer": (".layers.base", "Layer"),
    "Net": (".net", "Net"),
    "get_solver": (".solvers", "get_solver"),
    "SGDSolver": (".solvers", "SGDSolver"),
    "NesterovSolver": (".solvers", "NesterovSolver"),
    "AdaGradSolver": (".solvers", "AdaGradSolver"),
    "RMSPropSolver": (".solvers", "RMSPropSolver"),
    "AdaDeltaSolver": (".solvers", "AdaDeltaSolver"),
    "AdamSolver": (".solvers", "AdamSolver"),
}

__all__ = list(_LAZY) + ["set_num_threads", "get_num_threads"]


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
