"""Which channels of which blobs follow a convolution's output channels (DeePhi's
coarse-grained pruning, #13), as a pure function over a NetParameter and the blob shapes.

Removing output channel c of a Convolution removes, in every layer the channel flows
through, the entries that belong to it: the filter c and bias c of the convolution, entry c
of a following BatchNorm / Scale / Bias / PReLU, and the input channel c (its weights) of
every Convolution or InnerProduct that reads it. A *channel space* is a set of channels that
must go together: one per Convolution output, merged when an Eltwise adds two blobs (a
residual block: both branches' convolutions lose the same channels) or a Concat on another
axis than the channels lines them up. A blob's channels are a *layout*: a list of (space,
size) segments (a Concat on the channel axis joins its bottoms' lists) and `inner`, the
entries each channel has along the flattened axis 1 (H x W of a pooled map read by an
InnerProduct, whose weight columns are channel-major: c * inner ... (c + 1) * inner - 1).

Layers, by type, in `channel_graph`:

  Convolution (group 1)        a new space for its top; its bottom's layout is sliced out of
                               weight axis 1 (input channels)
  Convolution (depthwise)      group == channels in == num_output: passes its bottom's layout
                               (weight and bias axis 0), num_output and group shrink with it
  InnerProduct (axis 1)        reads its bottom's layout (weight axis 1, axis 0 transposed);
                               its outputs are a fixed space (DeePhi prunes convolutions)
  BatchNorm, Scale, Bias,      pass the layout; every blob of theirs with one entry per
  PReLU (one bottom)           channel (or per channel x inner) is sliced along axis 0
  ReLU, Sigmoid, TanH, AbsVal, BNLL, ELU, Power, Exp, Log, Threshold, Clip, Swish,
  Dropout, Pooling, Split, LRN (WITHIN_CHANNEL), MVN (per channel), Flatten (axis 1),
  Reshape (that keeps the batch axis and the channel-major order), Crop (axis >= 2)
                               pass the layout (inner from the top's shape)
  Eltwise                      merges its bottoms' spaces, segment by segment
  Concat                       axis 1: the bottoms' segments, in order; another axis: merge
  Silence                      reads nothing that matters

Everything else (Softmax, losses, Accuracy, Slice, Deconvolution, grouped convolutions, the
forks' masked layers, layers with no bottom) makes the spaces it reads *fixed* (not
prunable, with the reason), and its tops are new fixed spaces; so are the spaces of a blob
nobody reads (a net output). Fixedness spreads through merging.

`channel_graph(net_param, blob_shapes, param_shapes)` takes the NetParameter as the Net
built it (one phase, Split layers in: blob names are unique per writer) and the shapes of
its blobs ({blob name: shape}) and layer blobs ({layer name: [shape, ...]}); it returns a
ChannelGraph: the groups (one per merged space: size, producing convolutions, fixed reason),
the Slicings (layer, blob, axis, layout, inner) that removing channels cuts, the layers whose
num_output (and group) follow a layout, and each layer's bottom and top layouts (for stat).
"""
from dataclasses import dataclass, field

import numpy as np

# Layers that map channel c of their bottom to channel c of their top, element by element.
PASS_TYPES = frozenset({
    "ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Power", "Exp", "Log", "Threshold",
    "Clip", "Swish", "Dropout", "Pooling", "Split", "LRN", "MVN", "Flatten", "Reshape",
    "Crop", "BatchNorm", "Scale", "Bias", "PReLU"})
# Of those, the ones that own one entry per channel in their blobs.
CHANNEL_PARAM_TYPES = frozenset({"BatchNorm", "Scale", "Bias", "PReLU"})
# Layers whose input and output channels are prunable.
CONV_TYPES = frozenset({"Convolution"})
FC_TYPES = frozenset({"InnerProduct"})


@dataclass(frozen=True)
class Layout:
    """A blob's channels: ((space, size), ...) segments along axis 1, `inner` entries each."""
    segments: tuple
    inner: int

    @property
    def channels(self):
        return sum(size for _, size in self.segments)


@dataclass(frozen=True)
class Slicing:
    """Blob `blob` of layer `layer` has one slot along `axis` per channel of `layout`
    (`inner` consecutive slots per channel): removing channels removes their slots."""
    layer: str
    blob: int
    axis: int
    layout: Layout
    inner: int


@dataclass
class ChannelGroup:
    """Channels that are pruned together: `size` of them, written by the `producers`
    convolutions; `fixed` says why they cannot be pruned (None: they can)."""
    space: int
    size: int
    producers: list = field(default_factory=list)
    fixed: object = None


class ChannelGraph:
    def __init__(self):
        self._parent = []
        self._size = []
        self._producers = []
        self._fixed = []
        self.slicings = []
        self.resized = {}       # layer -> (Layout, depthwise): num_output (and group) follow it
        self.io = {}            # layer -> ([bottom Layout or None], [top Layout or None])

    # --- spaces ------------------------------------------------------------------------------
    def new_space(self, size, producer=None, fixed=None):
        self._parent.append(len(self._parent))
        self._size.append(int(size))
        self._producers.append([producer] if producer else [])
        self._fixed.append(fixed)
        return len(self._parent) - 1

    def root(self, space):
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]
            space = self._parent[space]
        return space

    def merge(self, a, b):
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        if self._size[a] != self._size[b]:
            raise ValueError("merging channel spaces of different sizes")
        if b < a:
            a, b = b, a
        self._parent[b] = a
        self._producers[a] += self._producers[b]
        self._fixed[a] = self._fixed[a] or self._fixed[b]

    def fix(self, layout, reason):
        if layout is None:
            return
        for space, _ in layout.segments:
            r = self.root(space)
            self._fixed[r] = self._fixed[r] or reason

    # --- results -----------------------------------------------------------------------------
    @property
    def groups(self):
        """Every group that a convolution writes, in the order of their first producer."""
        out = []
        for space in range(len(self._parent)):
            if self.root(space) == space and self._producers[space]:
                out.append(ChannelGroup(space, self._size[space], list(self._producers[space]),
                                        self._fixed[space]))
        return out

    @property
    def prunable(self):
        return [g for g in self.groups if g.fixed is None]

    def kept_channels(self, layout, kept):
        """Channels of `layout` left when group root r keeps kept[r] of its channels (all
        where r is missing)."""
        return sum(kept.get(self.root(s), size) for s, size in layout.segments)


def _shape(shapes, name):
    shape = shapes.get(name)
    return tuple(int(d) for d in shape) if shape is not None else None


def _inner_of(shape, channels):
    """Entries per channel along the flattened axis 1 of a blob of `shape`, or None."""
    if shape is None or len(shape) < 2 or channels == 0:
        return None
    total = int(np.prod(shape[1:], dtype=np.int64))
    return total // channels if total % channels == 0 else None


def _passes(lp, bottom, top):
    """Whether pass-through layer `lp` keeps channel-major order from `bottom` to `top`
    shapes (None: why not)."""
    t = lp.type
    if t == "LRN" and lp.lrn_param.norm_region != lp.lrn_param.ACROSS_CHANNELS:
        return None
    if t == "LRN":
        return "LRN across channels mixes them"
    if t == "MVN" and lp.mvn_param.across_channels:
        return "MVN across channels mixes them"
    if t == "Flatten" and lp.flatten_param.axis % max(len(bottom), 1) != 1:
        return "Flatten off the channel axis"
    if t == "Crop" and lp.crop_param.axis % max(len(bottom), 1) < 2:
        return "Crop of the channel axis"
    if t == "Reshape" and (top is None or len(top) < 2 or top[0] != bottom[0]
                           or (len(top) > 2 and top[1] != bottom[1])):
        return "Reshape that moves the channels"
    if t in ("Scale", "Bias") and len(lp.bottom) > 1:
        return f"{t} by a second bottom"
    if t == "Scale" and lp.scale_param.axis % max(len(bottom), 1) != 1:
        return "Scale off the channel axis"
    if t == "Bias" and lp.bias_param.axis % max(len(bottom), 1) != 1:
        return "Bias off the channel axis"
    return True


def channel_graph(net_param, blob_shapes, param_shapes):
    """The ChannelGraph of `net_param` (module docstring)."""
    g = ChannelGraph()
    layouts = {}
    unread = {}                     # blob -> writer, for blobs no later layer reads

    def fresh(lp, name, reason):
        shape = _shape(blob_shapes, name)
        if shape is None or len(shape) < 2:
            return None
        space = g.new_space(shape[1], fixed=reason)
        return Layout(((space, shape[1]),), _inner_of(shape, shape[1]) or 1)

    for lp in net_param.layer:
        bottoms = [layouts.get(b) for b in lp.bottom]
        for b in lp.bottom:
            unread.pop(b, None)
        tops = _layer(g, lp, bottoms, blob_shapes, param_shapes, fresh)
        for name, layout in zip(lp.top, tops):
            layouts[name] = layout
            unread[name] = lp.name
        g.io[lp.name] = (bottoms, list(tops))
    for name in unread:
        g.fix(layouts.get(name), f"blob '{name}' is an output of the net")
    return g


def _layer(g, lp, bottoms, blob_shapes, param_shapes, fresh):
    """The top layouts of layer `lp`, recording its slicings and merges in `g`."""
    t, name = lp.type, lp.name
    pshapes = param_shapes.get(name, [])
    if not lp.bottom:
        return [fresh(lp, top, f"'{top}' is an input of the net ({name}, {t})") for top in lp.top]
    if t == "Silence":
        return []
    b0 = bottoms[0]
    bshape = _shape(blob_shapes, lp.bottom[0])
    if t in CONV_TYPES and b0 is not None and len(lp.top) == 1 and pshapes:
        return [_conv(g, lp, b0, pshapes, blob_shapes, fresh)]
    if t in FC_TYPES and b0 is not None and len(lp.top) == 1 and pshapes:
        axis = lp.inner_product_param.axis % len(bshape)
        if axis == 1:
            w_axis = 0 if lp.inner_product_param.transpose else 1
            if pshapes[0][w_axis] == b0.channels * b0.inner:
                g.slicings.append(Slicing(name, 0, w_axis, b0, b0.inner))
                return [fresh(lp, lp.top[0], f"fully connected outputs ({name}) are not pruned")]
    if t == "Eltwise" and all(b is not None for b in bottoms):
        if _merge_all(g, bottoms):
            return [_relaid(b0, _shape(blob_shapes, lp.top[0]))]
    if t == "Concat" and all(b is not None for b in bottoms) and bshape is not None:
        cp = lp.concat_param
        axis = (cp.axis if cp.HasField("axis") or not cp.HasField("concat_dim")
                else cp.concat_dim) % len(bshape)
        if axis == 1 and len({b.inner for b in bottoms}) == 1:
            segments = tuple(s for b in bottoms for s in b.segments)
            return [Layout(segments, b0.inner)]
        if axis != 1 and _merge_all(g, bottoms):
            return [_relaid(b0, _shape(blob_shapes, lp.top[0]))]
    if t in PASS_TYPES and b0 is not None and bshape is not None:
        tops = [_shape(blob_shapes, top) for top in lp.top]
        verdict = _passes(lp, bshape, tops[0] if tops else None)
        relaid = [_relaid(b0, s) for s in tops]
        if verdict is True and all(r is not None for r in relaid):
            if t in CHANNEL_PARAM_TYPES:
                _channel_params(g, name, b0, pshapes)
            return relaid
    reason = f"read by layer '{name}' ({t})"
    for b in bottoms:
        g.fix(b, reason)
    return [fresh(lp, top, f"written by layer '{name}' ({t})") for top in lp.top]


def _conv(g, lp, b0, pshapes, blob_shapes, fresh):
    name = lp.name
    cp = lp.convolution_param
    group = cp.group or 1
    out = pshapes[0][0]
    if group == 1 and pshapes[0][1] == b0.channels:
        g.slicings.append(Slicing(name, 0, 1, b0, 1))
        space = g.new_space(out, producer=name)
        top = Layout(((space, out),), _inner_of(_shape(blob_shapes, lp.top[0]), out) or 1)
        g.slicings.append(Slicing(name, 0, 0, top, 1))
        if len(pshapes) > 1:
            g.slicings.append(Slicing(name, 1, 0, top, 1))
        g.resized[name] = (top, False)
        return top
    if group == out == b0.channels and pshapes[0][1] == 1:
        top = _relaid(b0, _shape(blob_shapes, lp.top[0]))
        if top is not None:
            for k in range(len(pshapes)):
                g.slicings.append(Slicing(name, k, 0, top, 1))
            g.resized[name] = (top, True)
            return top
    g.fix(b0, f"read by the grouped convolution '{name}' (group {group})")
    return fresh(lp, lp.top[0], f"written by the grouped convolution '{name}' (group {group})")


def _relaid(layout, top_shape):
    """`layout` on a top of `top_shape` (its own inner), or None when the shape does not
    hold a whole number of entries per channel."""
    inner = _inner_of(top_shape, layout.channels)
    return None if inner is None else Layout(layout.segments, inner)


def _merge_all(g, layouts):
    """Merge the layouts' spaces segment by segment; False (and all fixed) when their
    segments do not line up."""
    first = layouts[0]
    sizes = [size for _, size in first.segments]
    if any([size for _, size in b.segments] != sizes for b in layouts[1:]):
        for b in layouts:
            g.fix(b, "added or stacked to a blob whose channels do not line up")
        return False
    for b in layouts[1:]:
        for (s0, _), (s1, _) in zip(first.segments, b.segments):
            g.merge(s0, s1)
    return True


def _channel_params(g, name, layout, pshapes):
    """Slice every blob of a per-channel layer with one entry per channel (or per channel
    x inner entry of a flattened blob) along axis 0."""
    for k, shape in enumerate(pshapes):
        if not shape:
            continue
        if shape[0] == layout.channels and layout.channels > 1:
            g.slicings.append(Slicing(name, k, 0, layout, 1))
        elif shape[0] == layout.channels * layout.inner and layout.inner > 1:
            g.slicings.append(Slicing(name, k, 0, layout, layout.inner))
