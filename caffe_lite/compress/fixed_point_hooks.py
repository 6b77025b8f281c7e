"""Fixed-point formats applied in a net: rounded tops after a layer's forward, rounded
weights through Layer.param_transform (float shadow weights: the solver keeps updating the
float blobs, the forward and backward see their fixed-point copy).

Used where the formats are fixed once chosen: the solver-level flow
(jacinto_quantize_solver.py) and a prototxt's own formats (layer_qparams.py).
"""
import numpy as np

from .. import common
from ..net_hooks import NetHook
from . import fixed_point as fp


class QuantizedWeights:
    """One layer's Layer.param_transform: the fixed-point copy of each blob that has a format
    ({blob index: QScale}), the weight clamped and the bias not (as TI), made once per forward
    pass and reused by the backward; a blob without a format stays float."""

    def __init__(self, owner, qscales):
        self.owner, self.qscales = owner, dict(qscales)
        self.buffers = {}

    def __call__(self, index, w):
        qscale = self.qscales.get(index)
        if qscale is None:
            return w
        generation = self.owner.generation
        buf, made = self.buffers.get(index, (None, -1))
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            buf = np.empty_like(w)
        elif made == generation:
            return buf
        fp.fake_quantize(w, qscale, clip=index == 0, rounding=self.owner.rounding,
                         rng=common.rng(), out=buf)
        self.buffers[index] = (buf, generation)
        return buf


class NetFixedPoint(NetHook):
    """Fixed formats in one net: rounds the tops of the layers in `outputs` ({layer id: one
    QScale or None per top}) after their forward; `generation` counts passes so that
    QuantizedWeights rounds the weights once per pass."""

    def __init__(self, rounding):
        self.rounding = rounding
        self.generation = 0
        self.outputs = {}

    def before_forward(self, net):
        self.generation += 1

    def after_layer(self, net, layer_id):
        formats = self.outputs.get(layer_id)
        if formats is None:
            return
        rng = common.rng()
        for top, qs in zip(net._layer_records[layer_id].tops, formats):
            if qs is not None:
                fp.fake_quantize(top.data, qs, clip=True, rounding=self.rounding, rng=rng,
                                 out=top.data)

    def release(self, net):
        """Stop: no more rounding of tops, and the weights this hook rounds are float again."""
        self.outputs = {}
        for layer in net.layers:
            if getattr(layer.param_transform, "owner", None) is self:
                layer.param_transform = None
