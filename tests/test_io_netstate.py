"""Net::FilterNet / StateMeetsRule: phase, levels, stages, include vs exclude."""
import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.io import netstate
from caffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST

NET = """
layer { name: "always" }
layer { name: "train_only" include { phase: TRAIN } }
layer { name: "test_only" include { phase: TEST } }
layer { name: "not_test" exclude { phase: TEST } }
layer { name: "level2+" include { min_level: 2 } }
layer { name: "level<=1" include { max_level: 1 } }
layer { name: "deploy" include { stage: "deploy" } }
layer { name: "a_and_b" include { stage: "a" stage: "b" } }
layer { name: "a_or_b" include { stage: "a" } include { stage: "b" } }
layer { name: "not_a" include { not_stage: "a" } }
layer { name: "train_or_deploy" include { phase: TRAIN } include { stage: "deploy" } }
layer { name: "excl_test_deploy" exclude { phase: TEST stage: "deploy" } }
"""


def kept(state_text, net_text=NET):
    param = text_format.Parse(net_text, caffe_pb2.NetParameter())
    state = text_format.Parse(state_text, caffe_pb2.NetState())
    return [lp.name for lp in netstate.filter_net(param, state).layer]


@pytest.mark.parametrize("state,want", [
    ("phase: TRAIN", ["always", "train_only", "not_test", "level<=1", "not_a",
                      "train_or_deploy", "excl_test_deploy"]),
    ("phase: TEST", ["always", "test_only", "level<=1", "not_a", "excl_test_deploy"]),
    ("phase: TEST level: 2", ["always", "test_only", "level2+", "not_a",
                              "excl_test_deploy"]),
    ("phase: TEST stage: 'deploy'", ["always", "test_only", "level<=1", "deploy", "not_a",
                                     "train_or_deploy"]),
    ("phase: TEST stage: 'a'", ["always", "test_only", "level<=1", "a_or_b",
                                "excl_test_deploy"]),
    ("phase: TEST stage: 'b' stage: 'a'", ["always", "test_only", "level<=1", "a_and_b",
                                           "a_or_b", "excl_test_deploy"]),
])
def test_filter_net(state, want):
    assert kept(state) == want


def test_filter_uses_param_state_by_default():
    param = text_format.Parse('state { phase: TEST } ' + NET, caffe_pb2.NetParameter())
    out = netstate.filter_net(param)
    assert "test_only" in [lp.name for lp in out.layer]
    assert out.state.phase == TEST


def test_include_and_exclude_is_an_error():
    param = text_format.Parse('layer { name: "both" include { phase: TRAIN } '
                              'exclude { phase: TEST } }', caffe_pb2.NetParameter())
    with pytest.raises(CaffeError, match=r"net.prototxt:7: layer 'both': specify either "
                                         r"include rules or exclude rules; not both"):
        netstate.filter_net(param, caffe_pb2.NetState(), path="net.prototxt", lines=[7])


def test_state_meets_rule_unset_fields_are_free():
    assert netstate.state_meets_rule(caffe_pb2.NetState(level=-5), caffe_pb2.NetStateRule(),
                                     "x")


def test_net_state_helpers():
    base = caffe_pb2.NetState(phase=TRAIN, level=3, stage=["file"])
    state = netstate.net_state(TEST, 1, ["cli"], base)
    assert (state.phase, state.level, list(state.stage)) == (TEST, 1, ["file", "cli"])
    solver = netstate.solver_net_state(TRAIN, caffe_pb2.NetState(stage=["n"]),
                                       caffe_pb2.NetState(level=2, stage=["s"]))
    assert (solver.phase, solver.level, list(solver.stage)) == (TRAIN, 2, ["n", "s"])
    # The net file's own phase overrides the solver's default, as in Solver::InitTestNets.
    assert netstate.solver_net_state(TEST, caffe_pb2.NetState(phase=TRAIN)).phase == TRAIN
