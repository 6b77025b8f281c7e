"""DeePhi's coarse-grained (channel) pruning, as pure functions over a ChannelGraph
(channel_graph.py), the layers' arrays ({layer name: [array, ...]}) and a NetParameter.

A pruning is `keep`: {group root: bool array, True for each channel that stays}; a group
missing from it keeps every channel.

  filter_norms       per group, the L1 norm of each output channel's filters, summed over the
                     convolutions that write the group (DeePhi's REGULAR pruner ranks by
                     weight magnitude; the smallest go first)
  pruned_channels    the channels a model has already lost: every filter and bias writing
                     them is 0 (what `masked` leaves and the fine-tuning keeps)
  keep_lowest        a keep mask that drops `count` channels: the already pruned ones, then
                     the smallest norms
  masked             the masked model: every slot of a removed channel set to 0 (filters,
                     biases, BatchNorm statistics, Scale and Bias entries, and the input
                     weights that read the channel), same shapes
  removals           [(layer, blob, axis, removed slots)], what masked zeroes and the
                     fine-tuning holds at zero
  transformed        the removed slots cut out for real, and num_output (group for a
                     depthwise convolution) shrunk: the smaller net computes exactly what the
                     masked one does, since a removed channel is 0 wherever it is read
  plan_pruned        how many channels each group loses so that the operations come down to
                     a target, from the sensitivity analysis (loss_curve, ratio_within)
"""
import copy

import numpy as np

#: The pruning ratios `ana` measures for every group (the fraction of its channels removed).
ANA_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Added loss per unit of ratio, so that groups whose measured loss is flat share the
#: pruning evenly instead of jumping to the end of their flat stretch together.
TIE_SLOPE = 1e-3


def filter_norms(graph, params):
    """{root: L1 norm of each output channel's filters} of the prunable groups."""
    out = {}
    for group in graph.prunable:
        norms = np.zeros(group.size)
        for conv in group.producers:
            w = np.asarray(params[conv][0], np.float64)
            norms += np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
        out[group.space] = norms
    return out


def pruned_channels(graph, params):
    """{root: bool array, True where every filter and bias writing the channel is 0}."""
    out = {}
    for group in graph.prunable:
        zero = np.ones(group.size, bool)
        for conv in group.producers:
            arrays = params[conv]
            w = np.asarray(arrays[0])
            zero &= ~w.reshape(w.shape[0], -1).any(axis=1)
            if len(arrays) > 1:
                zero &= np.asarray(arrays[1]).reshape(-1) == 0
        out[group.space] = zero
    return out


def keep_lowest(norms, pruned, count):
    """Keep mask dropping `count` channels: those in `pruned` first, then the smallest norms
    (stable order among equals); at least one channel stays."""
    count = min(max(int(count), int(np.count_nonzero(pruned))), len(norms) - 1)
    rank = np.where(pruned, -1.0, np.asarray(norms, np.float64))
    keep = np.ones(len(norms), bool)
    keep[np.argsort(rank, kind="stable")[:count]] = False
    return keep


def kept_counts(keep):
    """{root: channels kept} of a pruning."""
    return {root: int(np.count_nonzero(k)) for root, k in keep.items()}


def _removed_slots(graph, slicing, keep):
    parts = []
    for space, size in slicing.layout.segments:
        k = keep.get(graph.root(space))
        removed = np.zeros(size, bool) if k is None else ~np.asarray(k, bool)
        parts.append(np.repeat(removed, slicing.inner))
    return np.concatenate(parts)


def removals(graph, keep):
    """[(layer, blob, axis, removed: bool per slot)] of the slicings that lose a slot."""
    out = []
    for s in graph.slicings:
        removed = _removed_slots(graph, s, keep)
        if removed.any():
            out.append((s.layer, s.blob, s.axis, removed))
    return out


def zero_slots(array, axis, removed):
    """Set the `removed` slots of `array` along `axis` to 0, in place."""
    index = [slice(None)] * array.ndim
    index[axis] = removed
    array[tuple(index)] = 0


def masked(graph, params, keep):
    """A copy of `params` with every slot of a removed channel set to 0."""
    out = {name: [np.array(a, copy=True) for a in arrays] for name, arrays in params.items()}
    for layer, blob, axis, removed in removals(graph, keep):
        if layer in out and blob < len(out[layer]):
            zero_slots(out[layer][blob], axis, removed)
    return out


def transformed(graph, net_param, params, keep):
    """(NetParameter, params) with the removed channels cut out (module docstring).

    `net_param` may hold more layers than the graph's net (both phases): every layer with a
    resized convolution's name is resized."""
    out = {name: [np.array(a, copy=True) for a in arrays] for name, arrays in params.items()}
    for layer, blob, axis, removed in removals(graph, keep):
        if layer in out and blob < len(out[layer]):
            out[layer][blob] = np.compress(~removed, out[layer][blob], axis=axis)
    param = copy.deepcopy(net_param)
    counts = kept_counts(keep)
    for lp in param.layer:
        resized = graph.resized.get(lp.name)
        if resized is None:
            continue
        layout, depthwise = resized
        n = graph.kept_channels(layout, counts)
        lp.convolution_param.num_output = n
        if depthwise:
            lp.convolution_param.group = n
    return param, out


# --- choosing the ratios ------------------------------------------------------------------

def loss_curve(baseline, accuracies, ratios=ANA_RATIOS):
    """The accuracy lost at ratio 0 and at each analysed ratio, made non-decreasing (a
    ratio never costs less than a smaller one: measured gains are noise) and strictly
    increasing by TIE_SLOPE."""
    lost = np.maximum(baseline - np.asarray(accuracies, np.float64), 0.0)
    curve = np.maximum.accumulate(lost) + TIE_SLOPE * np.asarray(ratios, np.float64)
    return np.concatenate([[0.0], curve])


def ratio_within(curve, tolerance, ratios=ANA_RATIOS):
    """The largest ratio whose (linearly interpolated) loss is at most `tolerance`."""
    xs = np.concatenate([[0.0], np.asarray(ratios, np.float64)])
    if tolerance <= 0:
        return 0.0
    if tolerance >= curve[-1]:
        return float(xs[-1])
    i = int(np.searchsorted(curve, tolerance, side="right")) - 1
    return float(xs[i] + (tolerance - curve[i]) / (curve[i + 1] - curve[i])
                 * (xs[i + 1] - xs[i]))


def plan_pruned(sizes, curves, floors, operations, target):
    """{root: channels to prune} so that `operations(pruned counts)` <= `target`.

    Every group prunes the largest ratio whose loss in the analysis (`curves`, from
    loss_curve) is within one tolerance, common to all groups, and never fewer channels
    than it has lost already (`floors`); the tolerance is the smallest that meets the
    target (bisection), so the groups that cost least accuracy give most. Returns None when
    even the largest analysed ratio everywhere does not reach the target."""
    def counts(tolerance):
        out = {}
        for root, size in sizes.items():
            r = ratio_within(curves[root], tolerance)
            n = int(np.floor(r * size + 1e-9))
            out[root] = min(max(n, floors.get(root, 0)), size - 1)
        return out

    lo, hi = -1.0, max(float(c[-1]) for c in curves.values()) if curves else 0.0
    if operations(counts(lo)) <= target:
        return counts(lo)
    if operations(counts(hi)) > target:
        return None
    for _ in range(80):
        mid = (lo + hi) / 2
        if operations(counts(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return counts(hi)
