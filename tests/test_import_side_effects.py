"""A script that imports caffe_lite and trains a net keeps its process as it set it up:
environment, GIL switch interval, OpenBLAS's thread count, signal handlers, NumPy's error
and print settings and global random state, the root logger."""
import json
import os
import subprocess
import sys
import textwrap

SCRIPT = r"""
import json, logging, os, signal, sys
import numpy as np


def state():
    root = logging.getLogger()
    return {
        "env": dict(os.environ),
        "switch": sys.getswitchinterval(),
        "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGHUP)],
        "np_err": np.geterr(),
        "np_print": repr(np.get_printoptions()),
        "np_random": repr(np.random.get_state()[1][:4]) + str(np.random.get_state()[2]),
        "root_logger": [root.level, [repr(h) for h in root.handlers]],
        "blas": openblas_threads(),
    }


def openblas_threads():
    if "caffe_lite.threads" not in sys.modules:
        return "not loaded"
    from caffe_lite.threads import openblas
    blas = openblas()
    return blas[0]() if blas else None


before = state()
import caffe_lite as caffe
after_import = state()

from caffe_lite.threads import openblas
from google.protobuf import text_format
from caffe_lite.proto import caffe_pb2

if openblas():
    openblas()[1](3)            # the script's own choice, which caffe-lite must leave alone
user = state()

NET = '''
layer { name: "x" type: "Input" top: "x" top: "y"
        input_param { shape { dim: %d dim: 3 dim: 12 dim: 12 } shape { dim: %d } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }
'''
for batch in (1, 4):            # a batch of one takes the unsplit path, four the split one
    net = caffe.Net(param=text_format.Parse(NET % (batch, batch), caffe_pb2.NetParameter()),
                    phase=caffe.TRAIN)
    net.forward()
    net.backward()
    solver_param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, lr_policy="fixed",
                                             max_iter=2, display=1, snapshot_after_train=False)
    solver_param.net_param.CopyFrom(text_format.Parse(NET % (batch, batch),
                                                      caffe_pb2.NetParameter()))
    solver = caffe.get_solver(solver_param)
    solver.step(2)
after_training = state()
print(json.dumps({"before": before, "after_import": after_import, "user": user,
                  "after_training": after_training}))
"""


def differences(a, b):
    """The keys (and environment variables) whose values differ between states a and b."""
    out = [key for key in a if key != "env" and key != "blas" and a[key] != b[key]]
    changed = sorted(k for k in set(a["env"]) | set(b["env"])
                     if a["env"].get(k) != b["env"].get(k))
    return out + [f"env {k}" for k in changed]


def test_importing_and_training_leave_the_process_as_it_was(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "CAFFE_LITE_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert differences(seen["before"], seen["after_import"]) == []
    assert differences(seen["user"], seen["after_training"]) == []
    assert seen["after_training"]["blas"] == seen["user"]["blas"]
