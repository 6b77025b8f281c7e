"""Every solver file of ../shared/corpus reads as a solver caffe-lite can run: a known update
rule, a known learning-rate policy with the fields it needs, a known regularizer, and one train
net given inline or as a prototxt file. The net files a solver names that the corpus holds are
nets."""
import pytest

from caffe_lite.io.prototxt import detect_kind, read_solver_param
from caffe_lite.solvers import LR_POLICIES, REGULARIZERS, SOLVERS
from caffe_lite.solvers.factory import solver_type
from caffe_lite.solvers.lr_policy import validate_lr_policy
from caffe_lite.solvers.validate import TRAIN_NET_FIELDS, Where

import corpus

@pytest.mark.parametrize("path", corpus.params("solver"))
def test_corpus_solver(path):
    param = read_solver_param(str(path))
    assert solver_type(param) in SOLVERS
    assert param.lr_policy in LR_POLICIES
    validate_lr_policy(param, Where(path))
    assert param.regularization_type in REGULARIZERS
    given = [f for f in TRAIN_NET_FIELDS if param.HasField(f)]
    assert len(given) == 1, given
    net = getattr(param, given[0])
    if given[0].endswith("_param"):
        assert net.layer and all(lp.type for lp in net.layer)
    else:
        assert net.endswith(".prototxt"), net
    for test_net in param.test_net:
        assert test_net.endswith(".prototxt"), test_net


def net_files_in_corpus(solver_path, param):
    """The files the solver's net fields name that the corpus holds, looked up from the
    solver's folder up to its source's folder (Caffe resolves them against the folder it was
    started in)."""
    source = corpus.CORPUS / solver_path.relative_to(corpus.CORPUS).parts[0]
    folders = [solver_path.parent] + [p for p in solver_path.parent.parents
                                      if p == source or source in p.parents]
    names = [n for n in (param.net, param.train_net, *param.test_net) if n]
    return [folder / name for name in names for folder in folders
            if (folder / name).is_file()]


@pytest.mark.skipif(not corpus.CORPUS.is_dir(), reason=f"{corpus.CORPUS} is not present")
def test_corpus_solver_net_files_are_nets():
    found = [f for path in corpus.files_by_kind()["solver"]
             for f in net_files_in_corpus(path, read_solver_param(str(path)))]
    assert found
    for net_file in found:
        assert detect_kind(net_file) == "net", net_file
