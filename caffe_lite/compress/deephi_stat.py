"""DeePhi's counting of a model's operations and parameters (`deephi_compress stat`, #13),
as a pure function over a NetParameter, its ChannelGraph and shapes.

DeePhi's figures, as its summary table and `stat` give them for the Xilinx tutorial's
miniVggNet (49,053,696 operations, 68,389 parameters), are reproduced by:

  operations   Convolution only: outputs x (2 x kernel volume + 1) per image, where outputs
               = num_output x H_out x W_out, kernel volume = C_in / group x k_h x k_w (a
               multiply and an add per weight, and the bias; + 0 without a bias)
  parameters   every blob of the Convolution, BatchNorm and Scale layers (BatchNorm's
               mean, variance and 1-element moving-average factor included)

Fully connected layers are in neither (the miniVggNet's fc1 alone holds 2.1 M weights). The
*full* count adds them, labelled as such: InnerProduct operations = outputs x (2 x inputs +
1) (+ 0 without a bias), and the parameters of every layer that has any.

With `kept` ({group root: channels kept}, channel_prune.kept_counts) every count is that of
the model with the other channels removed: what `transform` writes, so a masked model's
stat is its transformed model's.
"""
from dataclasses import dataclass

import numpy as np

DEEPHI_OP_TYPES = ("Convolution",)
DEEPHI_PARAM_TYPES = ("Convolution", "BatchNorm", "Scale")
FULL_OP_TYPES = ("Convolution", "InnerProduct")


@dataclass
class LayerCost:
    layer: str
    type: str
    output: str         # the output per image, channels kept x spatial ("14x32x32")
    operations: int     # per image
    params: int


@dataclass
class Totals:
    operations: int     # DeePhi's: Convolution
    params: int         # DeePhi's: Convolution, BatchNorm, Scale
    full_operations: int
    full_params: int


def _prod(dims):
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1


def layer_costs(net_param, graph, blob_shapes, param_shapes, kept=None):
    """[LayerCost] of every layer with blobs, in net order."""
    kept = kept or {}
    rows = []
    for lp in net_param.layer:
        pshapes = [tuple(int(d) for d in s) for s in param_shapes.get(lp.name, [])]
        if not pshapes:
            continue
        bottoms, tops = graph.io.get(lp.name, ([], []))
        b0 = bottoms[0] if bottoms else None
        t0 = tops[0] if tops else None
        top_shape = tuple(blob_shapes.get(lp.top[0], ())) if lp.top else ()
        if lp.type in DEEPHI_OP_TYPES:
            rows.append(_conv_cost(lp, graph, b0, t0, top_shape, pshapes, kept))
        elif lp.type == "InnerProduct":
            rows.append(_fc_cost(lp, graph, b0, top_shape, pshapes, kept))
        else:
            params = sum(_kept_size(graph, b0, s, kept) for s in pshapes)
            rows.append(LayerCost(lp.name, lp.type, _output(graph, t0, top_shape, kept), 0,
                                  params))
    return rows


def totals(rows):
    return Totals(sum(r.operations for r in rows if r.type in DEEPHI_OP_TYPES),
                  sum(r.params for r in rows if r.type in DEEPHI_PARAM_TYPES),
                  sum(r.operations for r in rows if r.type in FULL_OP_TYPES),
                  sum(r.params for r in rows))


def _output(graph, layout, shape, kept):
    if len(shape) < 2:
        return "x".join(str(d) for d in shape[1:]) or "-"
    channels = graph.kept_channels(layout, kept) if layout is not None else shape[1]
    return "x".join(str(d) for d in (channels,) + tuple(shape[2:]))


def _conv_cost(lp, graph, b0, t0, top_shape, pshapes, kept):
    w = pshapes[0]
    bias = len(pshapes) > 1
    resized = graph.resized.get(lp.name)
    out, per_group_in = w[0], w[1]
    if resized is not None:
        layout, depthwise = resized
        out = graph.kept_channels(layout, kept)
        if not depthwise and b0 is not None:
            per_group_in = graph.kept_channels(b0, kept)
    volume = per_group_in * _prod(w[2:])
    pixels = _prod(top_shape[2:])
    ops = out * pixels * (2 * volume + (1 if bias else 0))
    params = out * volume + (out if bias else 0)
    return LayerCost(lp.name, lp.type, _output(graph, t0, top_shape, kept), ops, params)


def _fc_cost(lp, graph, b0, top_shape, pshapes, kept):
    ipp = lp.inner_product_param
    w = pshapes[0]
    outputs, inputs = (w[1], w[0]) if ipp.transpose else (w[0], w[1])
    if b0 is not None and b0.channels * b0.inner == inputs:
        inputs = graph.kept_channels(b0, kept) * b0.inner
    bias = len(pshapes) > 1
    axis = ipp.axis % max(len(top_shape), 1) if top_shape else 1
    rows = _prod(top_shape[1:axis])
    ops = outputs * rows * (2 * inputs + (1 if bias else 0))
    params = outputs * inputs + (outputs if bias else 0)
    return LayerCost(lp.name, lp.type, str(outputs), ops, params)


def _kept_size(graph, layout, shape, kept):
    """Entries of a per-channel blob of `shape` left when its channels are cut (its whole
    size when it has no per-channel axis 0)."""
    size = _prod(shape)
    if layout is None or not shape:
        return size
    channels = layout.channels
    left = graph.kept_channels(layout, kept)
    if shape[0] == channels and channels > 1:
        return left * _prod(shape[1:])
    if shape[0] == channels * layout.inner and layout.inner > 1:
        return left * layout.inner * _prod(shape[1:])
    return size
