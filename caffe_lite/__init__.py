"""caffe-lite: a Caffe-compatible CNN training engine in pure Python.

`import caffe_lite as caffe` gives pycaffe's entry points:
  caffe.Net(model, caffe.TEST), caffe.set_mode_cpu(), caffe.set_random_seed(0),
  caffe.layer_type_list(), caffe.proto.caffe_pb2, caffe.io.blobproto_to_array(...)
"""
__version__ = "0.1.0"

import os

# OpenBLAS threads spin ~0.1 s after each multi-threaded GEMM, stealing a core from the
# kernels that run next. Net passes keep OpenBLAS on one thread (kernels/gemm.py:
# blas_single_threaded), which covers every import order; this short timeout also covers the
# one case that scope leaves multi-threaded, a batch of one, when caffe_lite is imported
# before NumPy (it is read when NumPy loads OpenBLAS).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import io, proto
from .common import TEST, TRAIN, set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .layers import layer_types as layer_type_list
from .layers.base import Layer
from .net import Net

from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, get_solver)

__all__ = ["Net", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device",
           "set_random_seed", "layer_type_list", "Layer", "proto", "io", "get_solver",
           "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver"]
