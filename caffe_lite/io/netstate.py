"""Which layers a net keeps for a NetState: Caffe's Net::FilterNet and Net::StateMeetsRule.

A layer with no `include` rules is kept unless it meets one of its `exclude` rules; a layer
with `include` rules is kept only if it meets one of them. A rule is met when each of its
conditions holds: `phase` equal, `min_level <= level <= max_level`, every `stage` present,
no `not_stage` present. A layer may not have both kinds of rule.
"""
from ..errors import CaffeError
from ..log import LOG


def _pb2():
    from ..proto import caffe_pb2
    return caffe_pb2


def state_meets_rule(state, rule, layer_name):
    """StateMeetsRule: does NetState `state` meet NetStateRule `rule`? (logs why not)."""
    if rule.HasField("phase") and rule.phase != state.phase:
        LOG.info("The NetState phase (%d) differed from the phase (%d) specified by a rule "
                 "in layer %s", state.phase, rule.phase, layer_name)
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        LOG.info("The NetState level (%d) is above the min_level (%d) specified by a rule "
                 "in layer %s", state.level, rule.min_level, layer_name)
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        LOG.info("The NetState level (%d) is above the max_level (%d) specified by a rule "
                 "in layer %s", state.level, rule.max_level, layer_name)
        return False
    stages = set(state.stage)
    for stage in rule.stage:
        if stage not in stages:
            LOG.info("The NetState did not contain stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    for stage in rule.not_stage:
        if stage in stages:
            LOG.info("The NetState contained a not_stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    return True


def layer_included(layer, state, where=None):
    """FilterNet's decision for one LayerParameter. `where` = (path, line) for errors."""
    if len(layer.include) and len(layer.exclude):
        path, line = where if where else (None, None)
        raise CaffeError(f"layer '{layer.name}': specify either include rules or exclude "
                         "rules; not both", path, line)
    if not len(layer.include):
        return not any(state_meets_rule(state, rule, layer.name) for rule in layer.exclude)
    return any(state_meets_rule(state, rule, layer.name) for rule in layer.include)


def filter_net(param, state=None, path=None, lines=None):
    """FilterNet: a copy of NetParameter `param` keeping the layers that `state` (default:
    param.state) selects. The copy's `state` is the state used.

    `path` and `lines` (from read_net_param(..., with_lines=True)) locate errors.
    """
    if state is None:
        state = param.state
    out = _pb2().NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    out.state.CopyFrom(state)
    for i, layer in enumerate(param.layer):
        line = lines[i] if lines is not None and i < len(lines) else None
        if layer_included(layer, state, (path, line)):
            out.layer.add().CopyFrom(layer)
    return out


def net_state(phase, level=0, stages=(), base_state=None):
    """The NetState that Caffe's Net(param_file, phase, level, stages) builds: the file's
    `state` (base_state), then phase set, `stages` appended and level set."""
    state = _pb2().NetState()
    if base_state is not None:
        state.CopyFrom(base_state)
    state.phase = phase
    state.stage.extend(stages)
    if level is not None:
        state.level = level
    return state


def solver_net_state(phase, net_param_state=None, solver_state=None):
    """The NetState that Solver::InitTrainNet / InitTestNets give a net: start from `phase`
    (TRAIN or TEST), merge the net's own `state`, then the solver's `train_state` or
    `test_state[i]` (later fields win; stages are appended)."""
    state = _pb2().NetState(phase=phase)
    if net_param_state is not None:
        state.MergeFrom(net_param_state)
    if solver_state is not None:
        state.MergeFrom(solver_state)
    return state
