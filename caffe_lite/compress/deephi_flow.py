"""DeePhi's pruning flow at net level (#13): a model's TEST net with its channel graph,
the accuracy that `acc_name` gives over `test_iter` batches, the sensitivity analysis and
the choice of channels. The rules are pure functions in channel_graph.py, channel_prune.py
and deephi_stat.py; commands/compress.py reads the config and prints.

The analysis (`ana`): for every prunable channel group (channel_graph.py) and every ratio
of ANA_RATIOS, the accuracy with that fraction of the group's channels removed (smallest
L1 norms first, the other groups untouched), with the baseline's. It is saved as JSON in
<workspace>/ana.regular and reused by every later `compress` of the same model (the same
groups and channel counts), whatever its weights: the tutorial analyses once and prunes
seven times.

Every accuracy is measured on the same batches: the data layers' cursors (their
get_state / set_state, as a -snapshot resume uses) are put back before each measurement.
"""
import json
import os

import numpy as np

from ..common import TEST
from ..errors import CaffeError
from ..io.atomic import atomic_write
from ..io.prototxt import read_net_param
from . import channel_prune, deephi_stat
from .channel_graph import channel_graph

ANA_FILE = "ana.regular"
ANA_FORMAT = "caffe-lite deephi ana 1"


class PrunedModel:
    """The TEST net of `model` with `weights`, its channel graph and its shapes."""

    def __init__(self, model, weights=None):
        from ..net import Net
        self.model = os.fspath(model)
        self.param, lines = read_net_param(self.model, with_lines=True)
        self.net = Net(param=self.param, phase=TEST, source=(self.model, lines))
        if weights:
            self.net.copy_from(os.fspath(weights))
        self.blob_shapes = {name: tuple(b.shape) for name, b in self.net.blobs.items()}
        self.param_shapes = {name: [tuple(b.shape) for b in blobs]
                             for name, blobs in self.net.params.items()}
        self.graph = channel_graph(self.net.net_param, self.blob_shapes, self.param_shapes)

    def params(self):
        """{layer: [copies of its arrays]}."""
        return {name: [np.array(b.data, copy=True) for b in blobs]
                for name, blobs in self.net.params.items()}

    def set_params(self, params):
        for name, blobs in self.net.params.items():
            for blob, array in zip(blobs, params[name]):
                blob.data[...] = array

    def costs(self, kept=None):
        return deephi_stat.layer_costs(self.net.net_param, self.graph, self.blob_shapes,
                                       self.param_shapes, kept)

    def totals(self, kept=None):
        return deephi_stat.totals(self.costs(kept))

    def kept_of(self, pruned_counts):
        """{root: kept} from {root: pruned}."""
        sizes = {g.space: g.size for g in self.graph.prunable}
        return {root: sizes[root] - n for root, n in pruned_counts.items()}


class Evaluator:
    """Mean of blob `acc_name` over `test_iter` forward passes of a TEST net, from the same
    data position every time; `tick()` after each batch (a progress bar)."""

    def __init__(self, net, acc_name, test_iter, tick=None):
        self.net, self.acc_name, self.test_iter, self.tick = net, acc_name, test_iter, tick
        self.states = {i: layer.get_state() for i, layer in enumerate(net.layers)
                       if callable(getattr(layer, "get_state", None))
                       and callable(getattr(layer, "set_state", None))}

    def accuracy(self):
        for i, state in self.states.items():
            self.net.layers[i].set_state(state)
        total = np.float32(0)
        for _ in range(self.test_iter):
            self.net.forward_prefilled()
            total += np.float32(self.net.blobs[self.acc_name].data.reshape(-1)[0])
            if self.tick is not None:
                self.tick()
        return float(total / np.float32(self.test_iter))


def check_acc_name(model, acc_name, config):
    """The config's acc_name must be a scalar output of the TEST net."""
    net = model.net
    if acc_name not in net.outputs:
        outputs = ", ".join(net.outputs) or "none"
        raise config.error("acc_name", f"'{acc_name}' is not an output of the TEST net of "
                                       f"{model.model} (outputs: {outputs})")
    if net.blobs[acc_name].data.size != 1:
        raise config.error("acc_name", f"'{acc_name}' is not a single number "
                                       f"(shape {tuple(net.blobs[acc_name].shape)})")


def group_names(graph):
    return [list(g.producers) for g in graph.prunable]


def analyse(model, evaluator, ratios=channel_prune.ANA_RATIOS, report=None):
    """The analysis record (module docstring); `report(group, ratio, accuracy)` after each
    measurement."""
    graph = model.graph
    params = model.params()
    norms = channel_prune.filter_norms(graph, params)
    pruned = channel_prune.pruned_channels(graph, params)
    baseline = evaluator.accuracy()
    if report is not None:
        report(None, 0.0, baseline)
    groups = []
    try:
        for group in graph.prunable:
            accuracies = []
            for ratio in ratios:
                keep = {group.space: channel_prune.keep_lowest(
                    norms[group.space], pruned[group.space], np.floor(ratio * group.size))}
                model.set_params(channel_prune.masked(graph, params, keep))
                accuracies.append(evaluator.accuracy())
                if report is not None:
                    report(group, ratio, accuracies[-1])
            groups.append({"convolutions": group.producers, "channels": group.size,
                           "accuracy": accuracies})
    finally:
        model.set_params(params)
    return {"format": ANA_FORMAT, "ratios": list(ratios), "baseline": baseline,
            "groups": groups}


def save_analysis(workspace, record):
    path = os.path.join(workspace, ANA_FILE)
    atomic_write(path, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return path


def load_analysis(workspace, graph, config_path):
    """The saved analysis, checked against the model's groups."""
    path = os.path.join(workspace, ANA_FILE)
    if not os.path.isfile(path):
        raise CaffeError(f"no analysis in the workspace ({path}): run `caffe-lite compress "
                         f"ana -config {config_path}` first")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("format") != ANA_FORMAT:
            raise ValueError("not an analysis of this version")
        groups = [(g["convolutions"], int(g["channels"]), [float(a) for a in g["accuracy"]])
                  for g in record["groups"]]
        ratios = [float(r) for r in record["ratios"]]
        baseline = float(record["baseline"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CaffeError(f"damaged analysis ({err}): run `caffe-lite compress ana` again",
                         path) from None
    ours = [(g.producers, g.size) for g in graph.prunable]
    if [(g[0], g[1]) for g in groups] != ours or any(len(g[2]) != len(ratios) for g in groups):
        raise CaffeError("the analysis is of another model (its channel groups differ); run "
                         f"`caffe-lite compress ana -config {config_path}` again", path)
    return record, baseline, ratios, [g[2] for g in groups]


def plan(model, params, baseline, ratios, accuracies, rate):
    """(keep, kept counts) meeting `rate` against the full model's operations, or a
    CaffeError when the analysed ratios cannot."""
    graph = model.graph
    groups = graph.prunable
    sizes = {g.space: g.size for g in groups}
    curves = {g.space: channel_prune.loss_curve(baseline, acc, ratios)
              for g, acc in zip(groups, accuracies)}
    pruned = channel_prune.pruned_channels(graph, params)
    floors = {root: int(np.count_nonzero(p)) for root, p in pruned.items()}
    full = model.totals().operations
    target = full * (1.0 - rate)

    def operations(counts):
        return model.totals(model.kept_of(counts)).operations

    counts = channel_prune.plan_pruned(sizes, curves, floors, operations, target)
    if counts is None:
        most = {g.space: min(max(int(np.floor(ratios[-1] * g.size + 1e-9)),
                                 floors[g.space]), g.size - 1) for g in groups}
        reached = 1.0 - operations(most) / full
        raise CaffeError(f"rate {rate:g} cannot be met: removing {ratios[-1]:g} of every "
                         f"prunable group's channels removes {100 * reached:.1f}% of the "
                         f"operations")
    norms = channel_prune.filter_norms(graph, params)
    keep = {root: channel_prune.keep_lowest(norms[root], pruned[root], counts[root])
            for root in sizes}
    return keep, channel_prune.kept_counts(keep)
