"""TI's own files (../shared/corpus/jacinto-models and jacinto-caffe) run in caffe-lite
unchanged apart from their data: every solver trains two iterations and then tests once,
every net runs forward once in TRAIN (which gives BatchNorm its statistics) and twice in
TEST (twice, so that a `quantize: true` net also runs a quantized pass), and no file sets a
fork field caffe-lite does not honour.

Data layers become Input layers of batch 2 filled with random images and labels
(test_corpus_nets.with_inputs / fill_inputs); nets made for ImageNet (224x224) run at 64x64,
which every TI net accepts, to keep the file within a couple of minutes on two cores. A
solver's net files are read from the solver's own folder: TI's solvers name them under the
training/<run>/<stage>/ folder their script wrote, and the corpus keeps them beside the
solver. Where TI's repository lacks a stage's copy, the identical file of a sibling stage
is used (for 0.16's imagenet test_quantize that one lacks `quantize: true`), and a test net
found nowhere is left out. Everything else -- the solver's update rule, regularization,
sparsity and quantization fields, iter_size, the nets' layers -- is TI's. The corpus holds
each content once (tests/corpus.py), so identical copies run once.
"""
from pathlib import Path

import numpy as np
import pytest

import caffe_lite as caffe
from caffe_lite.compress.fork_fields import describe, unhonoured_fields
from caffe_lite.errors import CaffeError
from caffe_lite.io.prototxt import read_net_param, read_solver_param
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import get_solver

import corpus
from test_corpus_nets import fill_inputs, with_inputs

SOURCES = ("jacinto-models", "jacinto-caffe")
SMALL_SIZE = 64       # ImageNet-sized inputs run at this size
ITERATIONS = 2
SIBLING_STAGES = ("initial", "sparse", "test", "l1reg")
# Files that fail in caffe-jacinto as they do here, and why.
FAILS_IN_TI = {
    "resnet26c1024bn_mp2_sliceproj_64c1x7_preact_train_poly.prototxt":
        "each BatchNorm has its Convolution's name; Caffe's ShareTrainedLayersWith pairs the "
        "test net's layers with the first layer of that name and stops at the first test "
        "(Incompatible number of blobs), as NVCaffe 0.16 does",
}


def ti_params(kind, marks=lambda path: ()):
    """corpus.params(kind) restricted to TI's two sources."""
    return [p for p in corpus.params(kind, marks)
            if p.values[0] is None or p.values[0].relative_to(corpus.CORPUS).parts[0] in SOURCES]


def fails_in_ti(path):
    reason = FAILS_IN_TI.get(path.name)
    return pytest.mark.xfail(strict=True, raises=CaffeError, reason=reason) if reason else ()


def small(param, path):
    """`param` with Input layers for its data, at SMALL_SIZE when made for large images."""
    runnable, size = with_inputs(param, path)
    if size and size > 100:
        runnable, _ = with_inputs(param, path, SMALL_SIZE)
    return runnable


def net_file(solver_path, name):
    """The corpus copy of a net file a TI solver names. TI's script wrote each stage's nets
    beside its solver, in training/<run>/<stage>/, and wrote the same train and test net
    into every stage; the repository kept some stages' copies only (the "test" stage of
    0.16's cifar10_jacintonet11v2 has no test.prototxt), so a missing one is taken from
    the stage folders beside it."""
    stage = solver_path.parent
    for folder in [stage] + [stage.parent / s for s in SIBLING_STAGES]:
        found = folder / Path(name).name
        if found.is_file():
            return found
    return None


def runnable_solver(path, folder):
    """TI's solver with its nets inlined (data as inputs), short enough for a test."""
    param = read_solver_param(str(path))
    for field, inline in (("net", "net_param"), ("train_net", "train_net_param")):
        if param.HasField(field):
            found = net_file(path, getattr(param, field))
            assert found, f"{path} names {getattr(param, field)}, which the corpus lacks"
            getattr(param, inline).CopyFrom(read_net_param(str(found)))
            param.ClearField(field)
    tests = len(param.test_iter)
    for name in param.test_net:
        found = net_file(path, name)
        if found is None:   # 0.17's mobilenet-0.5 bn+scale backup has no test net at all
            tests -= 1
            continue
        param.test_net_param.add().CopyFrom(read_net_param(str(found)))
    del param.test_net[:]
    for field in ("net_param", "train_net_param"):
        if param.HasField(field):
            getattr(param, field).CopyFrom(small(getattr(param, field), path))
    for i, net in enumerate(param.test_net_param):
        param.test_net_param[i].CopyFrom(small(net, path))
    del param.test_iter[:]
    param.test_iter.extend([1] * tests)
    # the first test runs after training: a fresh BatchNorm's TEST pass divides by sqrt(eps)
    # and overflows in a net as deep as MobileNet, in Caffe too
    param.test_initialization = False
    param.max_iter = ITERATIONS
    param.display = 1
    param.snapshot = 0
    param.snapshot_after_train = False
    param.snapshot_prefix = str(folder / "snapshot")
    return param


@pytest.mark.parametrize("path", ti_params("solver", fails_in_ti))
def test_ti_solver_trains(path, tmp_path):
    caffe.set_random_seed(0)
    solver = get_solver(runnable_solver(path, tmp_path), str(path))
    for net in [solver.net] + list(solver.test_nets):
        fill_inputs(net)
    solver.step(ITERATIONS)
    assert solver.iter == ITERATIONS
    assert np.isfinite(solver.smoothed_loss)
    for blob in solver.net.learnable_params:
        assert np.all(np.isfinite(blob.data))
    solver.test_all()
    for scores in solver.mean_scores:
        assert scores and all(np.isfinite(s) for s in scores)


@pytest.mark.parametrize("path", ti_params("net"))
def test_ti_net_runs_forward(path):
    caffe.set_random_seed(0)
    param = small(read_net_param(str(path)), path)
    # one TRAIN pass first gives BatchNorm statistics: the TEST pass of a fresh MobileNet
    # divides by sqrt(eps) at each of its 27 BatchNorms and overflows, in Caffe too
    train = Net(param=param, phase=caffe_pb2.TRAIN)
    fill_inputs(train)
    train.forward()
    net = Net(param=param, phase=caffe_pb2.TEST)
    net.share_trained_layers_with(train)
    for _ in range(2):
        fill_inputs(net)
        outputs = net.forward()
        assert outputs and all(np.all(np.isfinite(v)) for v in outputs.values())


@pytest.mark.parametrize("path", ti_params("net") + ti_params("solver"))
def test_ti_file_sets_no_unhonoured_field(path):
    message = (caffe_pb2.SolverParameter if path in corpus.files_by_kind()["solver"]
               else caffe_pb2.NetParameter)
    text = path.read_text(encoding="utf-8", errors="replace")
    found = [f"{path.name}:{occ.line}: {describe(occ)}"
             for occ in unhonoured_fields(text, message.DESCRIPTOR)]
    assert not found, "\n".join(found)
