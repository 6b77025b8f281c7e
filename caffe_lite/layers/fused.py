"""FusedLayer: a chain of Caffe layers run as one layer (the fused types of Wei Wen's SSL
fork, branch `intel`: ConvolutionReLU, ConvolutionReLUPool, ConvolutionReLUPoolLRN,
InnerProductReLUDropout).

A subclass lists its `stages` as (Caffe type, *_param field) pairs, first to last. Each stage
is the registered layer of that type, built from the fused layer's *_param of that name, so
the numbers are those of the unfused sequence by construction:
  * the first stage (Convolution or InnerProduct) owns the blobs, and the fused layer's
    `blobs` are that list: a caffemodel written for the fused net, or for the unfused one
    with the same layer name, loads either way;
  * element-wise stages (ReLU, Dropout) run in place on the blob before them, as the
    corpus's unfused nets write them, except as the last stage, which writes the top;
  * the blobs between stages are kept: backward needs their data and carries diffs through.
With several bottom/top pairs (ConvolutionReLU, as Convolution), the first stage maps every
bottom with its shared weights and each pair has its own later stages; with one bottom, the
last stage receives every top (Pooling's MAX mask top).
Backward runs the stages last to first; the inner diffs are always computed when either a
bottom or a param needs its gradient, as the unfused net would.
"""
from ..proto import caffe_pb2
from . import create_layer
from .base import Layer

ELEMENTWISE = ("ReLU", "Dropout")
_BLOBS_FROM_PARAM = ("Convolution", "InnerProduct")


class FusedLayer(Layer):
    #: ((Caffe type, LayerParameter field of its *_param), ...), first to last
    stages = ()

    def _stage_param(self, index):
        kind, field = self.stages[index]
        suffix = "" if index == 0 else f"/{kind.lower()}"
        lp = caffe_pb2.LayerParameter(name=self.name + suffix, type=kind)
        if self.param.HasField(field):
            getattr(lp, field).CopyFrom(getattr(self.param, field))
        if kind in _BLOBS_FROM_PARAM:
            lp.blobs.extend(self.param.blobs)
        return lp

    def _stage(self, index):
        return create_layer(self._stage_param(index), self.phase, self.dtype)

    def layer_setup(self, bottom, top):
        kinds = [kind for kind, _ in self.stages]
        #: the weighted first stage; its blobs are this layer's blobs
        self.head = self._stage(0)
        self.tails = [[self._stage(s) for s in range(1, len(kinds))] for _ in bottom]
        # links[k][s]: the input of stage s + 1 of pair k
        self.links = []
        for _ in bottom:
            chain = [self.make_blob(())]
            for s in range(1, len(kinds) - 1):
                chain.append(chain[-1] if kinds[s] in ELEMENTWISE else self.make_blob(()))
            self.links.append(chain)
        self.head.setup(bottom, self._heads_out())
        for k, layers in enumerate(self.tails):
            for s, layer in enumerate(layers):
                layer.setup(*self._wires(k, s, top))
        self.blobs = self.head.blobs

    def _heads_out(self):
        return [chain[0] for chain in self.links]

    def _wires(self, k, s, top):
        """(bottoms, tops) of stage s + 1 of pair k."""
        chain = self.links[k]
        if s + 1 < len(chain):
            return [chain[s]], [chain[s + 1]]
        return [chain[s]], (top if len(self.links) == 1 else [top[k]])

    def _sync(self):
        # the net sets these on the fused layer (lr_mult 0, force_backward, a quantizer)
        self.head.blobs = self.blobs
        self.head.param_propagate_down = self.param_propagate_down
        self.head.param_transform = self.param_transform

    def reshape(self, bottom, top):
        self.head.reshape(bottom, self._heads_out())
        for k, layers in enumerate(self.tails):
            for s, layer in enumerate(layers):
                layer.reshape(*self._wires(k, s, top))

    def forward_cpu(self, bottom, top):
        self._sync()
        self.head.forward_cpu(bottom, self._heads_out())
        for k, layers in enumerate(self.tails):
            for s, layer in enumerate(layers):
                layer.forward_cpu(*self._wires(k, s, top))

    def backward_cpu(self, top, propagate_down, bottom):
        self._sync()
        if not any(propagate_down) and not any(self.param_propagate_down):
            return
        for k, layers in enumerate(self.tails):
            for s in reversed(range(len(layers))):
                below, above = self._wires(k, s, top)
                layers[s].backward(above, [True], below)
        self.head.backward(self._heads_out(), propagate_down, bottom)

    def effective_weight(self):
        return self.head.effective_weight()

    def effective_bias(self):
        return self.head.effective_bias()
