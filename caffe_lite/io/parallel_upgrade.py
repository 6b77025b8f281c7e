"""Upgrade a big net's text on several cores: the layers are upgraded in slices, each in a
worker process, and the printed slices joined.

Every upgrade after V0 -> V1 (data transformation fields, V1 -> V2, BatchNorm params) works
on one layer at a time, and MessageToString prints a net's `layer` entries last and one
after the other, so slices of layers can be parsed, upgraded and printed apart and the
printed texts joined: the result is the text the whole-net path writes, byte for byte. The
`input` fields live in the text before the first layer (the head), upgraded in this process.

Slices are cut where a line starts with `layer {` or `layers {`. Tokens never span lines,
so such a cut is between two statements; it is between two top-level statements exactly
when every slice parses on its own (a cut inside a message leaves one slice with an
unclosed brace and the next with an extra one). Anything outside what this path handles
(a slice that fast_text does not parse, a V0 net, `layer` and `layers` in one net, a field
after the layers, an upgrade that reports a problem) makes `upgrade_text` return None, and
the caller runs the whole-net path, which gives the usual result, log and errors.
"""
import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import fast_text, upgrade

# Below this size the whole-net path is fast enough (and starting workers costs ~0.1 s).
MIN_PARALLEL_BYTES = 4 << 20
# Slices of about this size: enough of them to share the work evenly, small enough that a
# worker's messages stay small (per-layer costs grow with the size of a message).
SLICE_BYTES = 2 << 20

_LAYER_START = re.compile(r"^layers?[ \t\r\n]*[{<:]", re.MULTILINE)
_LAYER_FIELD = 100     # NetParameter.layer: printed after every other field of a new net

_text = None           # the text being upgraded, shared with forked workers


def upgrade_text(text, path, workers):
    """(changed, upgraded text) for the net `text` of file `path`, upgraded by `workers`
    processes, logging what upgrade_net_param logs; None when the whole-net path must run
    (see the module docstring)."""
    if workers < 2 or len(text) < MIN_PARALLEL_BYTES or not _can_fork():
        return None
    cuts = _slice_starts(text)
    if len(cuts) < 2:
        return None
    head = _parse_head(text[:cuts[0]], path)
    if head is None:
        return None
    bounds = list(zip(cuts, cuts[1:] + [len(text)]))
    global _text
    _text = text
    try:
        # a worker that dies (the OOM killer) breaks the pool instead of hanging the map,
        # and the whole-net path runs
        with ProcessPoolExecutor(min(workers, len(bounds)),
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_upgrade_slice, [(start, stop, path)
                                                     for start, stop in bounds]))
    except BrokenProcessPool:
        return None
    finally:
        _text = None
    if any(result is None for result in results):
        return None
    kinds = {kind for _, kind, _ in results}
    if len(kinds) > 1:         # `layer` and `layers` in one net: V1 -> V2 drops the `layer`s
        return None
    needed = set().union(*(steps for steps, _, _ in results))
    for step in upgrade.LATER_STEPS:
        if step.name == "input" and step.needs(head):
            needed.add(step.name)
            step.run(head, path)
    _log_steps(needed, path)
    printed = fast_text.to_string(head) + "".join(out for _, _, out in results)
    return bool(needed), printed


def _can_fork():
    return "fork" in multiprocessing.get_all_start_methods()


def _slice_starts(text):
    """Offsets of the `layer`/`layers` lines that start slices of about SLICE_BYTES."""
    starts = []
    match = _LAYER_START.search(text)
    while match:
        starts.append(match.start())
        match = _LAYER_START.search(text, match.start() + SLICE_BYTES)
    return starts


def _parse_head(head_text, path):
    """The NetParameter of the text before the first layer, when it holds no layer and
    nothing that prints after the layers; None otherwise."""
    from ..proto import caffe_pb2
    head = caffe_pb2.NetParameter()
    if not fast_text.parse(head_text, head):
        return None
    if upgrade.net_needs_v0_to_v1_upgrade(head) or len(head.layers) or len(head.layer):
        return None
    if any(field.number > _LAYER_FIELD for field, _ in head.ListFields()):
        return None
    return head


def _upgrade_slice(args):
    """In a worker: (names of the steps this slice needed, "layer" or "layers", its printed
    layers) for the slice text[start:stop]; None when the slice is outside this path."""
    logging.disable(logging.CRITICAL)      # the whole-net path logs any problem, once
    try:
        return _upgrade_layers(*args)
    except Exception:                      # and raises any error, naming the file
        return None


def _upgrade_layers(start, stop, path):
    from ..proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    if not fast_text.parse(_text[start:stop], net):
        return None
    fields = {field.name for field, _ in net.ListFields()}
    if not fields <= {"layer", "layers"} or len(fields) != 1:
        return None
    if upgrade.net_needs_v0_to_v1_upgrade(net):
        return None
    needed = set()
    for step in upgrade.LATER_STEPS:
        if step.name != "input" and step.needs(net):
            needed.add(step.name)
            if step.run(net, path) is False:
                return None
    return needed, fields.pop(), fast_text.to_string(net)


def _log_steps(needed, path):
    """The lines upgrade_net_param logs when the steps `needed` all succeed."""
    for step in upgrade.LATER_STEPS:
        if step.name in needed:
            upgrade.LOG.info(step.attempt, path)
            upgrade.LOG.info(step.success)
            if step.note:
                upgrade.LOG.warning(step.note)
