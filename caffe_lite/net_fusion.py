"""What Net may fuse in a forward pass, and what it may alias, proved from the layer graph.

Fusion: a layer (the leader) computes the layers that follow it as it writes its own top,
while that top is in cache, and Net skips them:
  * a ReLU (negative slope >= 0) on the leader's top, in place (Layer.fuses_relu) or into
    the ReLU's own top (Layer.fuses_relu_apart);
  * a BVLC BatchNorm's following Scale layer (one learned per-channel scale, out of place,
    reading the BatchNorm's top), and a ReLU after that Scale, in place or apart.
  * in a forward that no backward follows (Net.forward_only), a BatchNorm with stored
    statistics in place on a Convolution's top, with a following Scale (BVLC layout) and
    ReLU in place on the same top: the convolution applies them to its values as it writes
    them (Layer.fuses_channel_epilogue, kernels/channel_epilogue.py).
The followers run right after the leader in the layer order, nothing runs between them, and
every top they write gets the values of their own kernels: nothing a user can see differs.
A follower's reshape runs before the leader's pass. No fusion involves a layer with a loss
weight (its loss reads its own top), and Net fuses nothing while forward hooks or
debug_info look at each layer's top.

Kept tops: a layer that copies its top for its backward (Layer.copies_top: BatchNorm's
x_norm) may read the top itself where no other layer can write that top's memory, directly
or through a blob sharing it (the tops of Split, Flatten, Reshape, Concat and Slice taken
from it): BVLC's own TODO in BatchNormLayer::Forward_cpu. A BatchNorm fuses a Scale only on
a kept top (the fused pass keeps no x_norm). A pycaffe script that itself writes such a top
between forward and backward gets the gradient of what it wrote, where Caffe's BatchNorm
would use its copy (the Scale reading that top sees the write in both).
"""

# layers whose tops may share their bottom's memory
SHARES_BOTTOM_DATA = frozenset(("Split", "Flatten", "Reshape", "Concat", "Slice"))


def kept_top_layers(records):
    """The layers (Layer.copies_top) whose one top, out of place, nothing else can write."""
    kept = []
    for i, rec in enumerate(records):
        if not rec.layer.copies_top or len(rec.tops) != 1 or rec.tops[0] in rec.bottoms:
            continue
        aliases, grew = {id(rec.tops[0])}, True
        while grew:
            grew = False
            for other in records:
                if (other.layer.type in SHARES_BOTTOM_DATA
                        and any(id(b) in aliases for b in other.bottoms)):
                    for t in other.tops:
                        grew |= id(t) not in aliases
                        aliases.add(id(t))
        if not any(id(t) in aliases for j, other in enumerate(records) if j != i
                   and other.layer.type not in SHARES_BOTTOM_DATA for t in other.tops):
            kept.append(rec.layer)
    return kept


class Fusion:
    """The layers after a leader that its forward computes; `last` is the index of the last."""

    #: whether the fusion holds only when no backward follows the forward
    forward_only = False

    def __init__(self, last, followers, relu_slope=None, relu_top=None, scale=None):
        self.last = last
        self.followers = followers      # their records, in order (reshaped before the pass)
        self.relu_slope = relu_slope    # a fused ReLU's negative slope, None: none
        self.relu_top = relu_top        # the ReLU's own top, None: in place
        self.scale = scale              # (Scale layer, its top) fused into a BatchNorm

    def forward(self, rec):
        """The leader's reshape, its followers', then the leader's pass with the fusion."""
        layer = rec.layer
        layer.reshape(rec.bottoms, rec.tops)
        for follower in self.followers:
            follower.layer.reshape(follower.bottoms, follower.tops)
        layer.fused_relu, layer.fused_relu_top = self.relu_slope, self.relu_top
        if self.scale is not None:
            layer.fused_scale = self.scale
        try:
            layer.forward_cpu(rec.bottoms, rec.tops)
        finally:
            layer.fused_relu = layer.fused_relu_top = None
            if self.scale is not None:
                layer.fused_scale = None


class EpilogueFusion(Fusion):
    """A convolution and the BatchNorm (stored statistics), Scale and ReLU in place on its
    top, as one pass: the convolution applies their ChannelEpilogue as it writes. The
    BatchNorm's backward would need what its forward keeps, so only a forward that no
    backward follows fuses them."""
    forward_only = True

    def __init__(self, last, followers, batch_norm, scale_layer=None, relu_slope=None):
        super().__init__(last, followers, relu_slope)
        self.batch_norm = batch_norm
        self.scale_layer = scale_layer

    def forward(self, rec):
        layer = rec.layer
        layer.reshape(rec.bottoms, rec.tops)
        for follower in self.followers:
            follower.layer.reshape(follower.bottoms, follower.tops)
        layer.fused_epilogue = self.batch_norm.stored_stats_epilogue(self.scale_layer,
                                                                     self.relu_slope)
        try:
            layer.forward_cpu(rec.bottoms, rec.tops)
        finally:
            layer.fused_epilogue = None


def _in_place_on(rec, kind, top):
    return (rec.layer.type == kind and rec.bottoms == [top] and rec.tops == [top]
            and _no_loss(rec))


def _epilogue_fusion(records, i):
    """The EpilogueFusion led by records[i] (Layer.fuses_channel_epilogue), or None."""
    top = records[i].tops[0]
    after = records[i + 1:i + 4]
    if not after or not _in_place_on(after[0], "BatchNorm", top) or \
            not after[0].layer.use_global_stats:
        return None
    followers, scale, slope = [after[0]], None, None
    nxt = after[len(followers)] if len(after) > len(followers) else None
    if (nxt is not None and after[0].layer.fuses_scale and _in_place_on(nxt, "Scale", top)
            and nxt.layer.channel_scale() is not None):
        followers.append(nxt)
        scale = nxt.layer
    nxt = after[len(followers)] if len(after) > len(followers) else None
    if nxt is not None and _relu_on(nxt, top) and nxt.tops == [top]:
        followers.append(nxt)
        slope = nxt.layer.negative_slope
    return EpilogueFusion(i + len(followers), followers, after[0].layer, scale, slope)


def _no_loss(*records):
    return not any(any(rec.layer.loss_weights) for rec in records)


def _relu_on(rec, top):
    """Whether rec is a ReLU reading `top` that a fusion may take over (slope >= 0)."""
    return (rec.layer.type == "ReLU" and rec.bottoms == [top]
            and rec.layer.negative_slope >= 0 and _no_loss(rec))


def _channel_scale_on(rec, top):
    """Whether rec is a Scale with a learned per-channel vector reading `top` out of place."""
    return (rec.layer.type == "Scale" and rec.bottoms == [top] and rec.tops[0] is not top
            and rec.layer.channel_scale() is not None and _no_loss(rec))


def find_fusions(records, kept):
    """{leader index: Fusion} over the layer records; `kept`: kept_top_layers' result."""
    fusions = {}
    kept = {id(layer) for layer in kept}
    for i, rec in enumerate(records):
        layer = rec.layer
        if len(rec.tops) != 1 or not _no_loss(rec):
            continue
        if getattr(layer, "fuses_channel_epilogue", False):
            fusion = _epilogue_fusion(records, i)
            if fusion is not None:
                fusions[i] = fusion
            continue
        nxt = records[i + 1] if i + 1 < len(records) else None
        followers, scale, top = [], None, rec.tops[0]
        apart_ok = layer.fuses_relu_apart
        if (getattr(layer, "fuses_scale", False) and id(layer) in kept and nxt is not None
                and _channel_scale_on(nxt, top)):
            followers.append(nxt)
            scale, top, apart_ok = (nxt.layer, nxt.tops[0]), nxt.tops[0], True
        j = i + 1 + len(followers)
        relu = records[j] if j < len(records) else None
        relu_slope = relu_top = None
        if relu is not None and _relu_on(relu, top) and (layer.fuses_relu or scale):
            if relu.tops == [top]:
                relu_slope = relu.layer.negative_slope
            elif apart_ok and relu.tops[0] is not top:
                relu_slope, relu_top = relu.layer.negative_slope, relu.tops[0]
            if relu_slope is not None:
                followers.append(relu)
        if followers:
            fusions[i] = Fusion(i + len(followers), followers, relu_slope, relu_top, scale)
    return fusions
