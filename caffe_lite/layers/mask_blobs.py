"""Mask blobs for the DNS and INQ layers (no layer type of its own).

A masked layer holds [W, b, M_W, M_b] (or [W, M_W] without a bias), as the forks do: one
mask per parameter blob, the same shape, filled from the layer's weight_mask_filler and
bias_mask_filler (an absent filler is Caffe's default, constant 0). The masks are state
blobs: saved in and loaded from the caffemodel, shared with the test nets, never updated by
a solver. A caffemodel with only the parameter blobs (a dense model) loads and the masks
keep their filler values.

A masked layer also knows the solver iteration: the solver hook in
compress/dns_inq_training.py pushes it through `set_iteration` before each iteration, as
the forks' Net pushes iter_ into their layers; a net driven without a solver stays at 0.
"""
from .. import fillers


def add_masks(layer, weight_mask_filler, bias_mask_filler):
    """Append one mask blob per parameter blob of `layer` and declare them state blobs."""
    params = len(layer.blobs)
    masks = [layer.make_blob(b.shape) for b in layer.blobs]
    fillers.fill(masks[0], weight_mask_filler)
    if params > 1:
        fillers.fill(masks[1], bias_mask_filler)
    layer.blobs.extend(masks)
    layer.state_blobs = frozenset(range(params, 2 * params))
    layer.optional_blobs_from = params
    return masks


class IterationAware:
    """The solver iteration, pushed in by the DNS / INQ solver hook."""

    iteration = 0

    def set_iteration(self, iteration):
        self.iteration = int(iteration)


def parameter_masks(layer):
    """[(parameter array, mask array)] of a masked layer, weight first."""
    params = layer.optional_blobs_from
    return [(layer.blobs[i].data, layer.blobs[params + i].data) for i in range(params)]
