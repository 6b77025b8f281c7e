"""Embed (Caffe's EmbedLayer): a lookup table, an InnerProduct over one-hot inputs.

    y[..., :] = W[x[...], :] + b

embed_param: num_output N (> 0), input_dim K (> 0, the vocabulary size), bias_term true,
weight_filler (constant 0), bias_filler (constant 0).
blobs: [weight (K, N), bias (N,)]. Top shape: bottom.shape + (N,). The bottom holds
integer-valued indices in [0, K). Backward: W[x[i]] += dy[i] for each i in order, db +=
sum over i of dy[i]; there is no gradient for the indices (propagate_down is an error, as
in Caffe).
"""
import numpy as np

from .. import fillers
from . import register
from .base import Layer


@register("Embed")
class EmbedLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output = p.num_output
        if self.num_output <= 0:
            raise self.error("EmbedLayer num_output must be positive.")
        self.input_dim = p.input_dim
        if self.input_dim <= 0:
            raise self.error("EmbedLayer input_dim must be positive.")
        self.bias_term = p.bias_term
        shapes = [(self.input_dim, self.num_output)]
        if self.bias_term:
            shapes.append((self.num_output,))
        if self.blobs:
            pass
        elif len(self.param.blobs):
            self.blobs = self.blobs_from_param(shapes)
        else:
            self.blobs = [self.make_blob(s) for s in shapes]
            fillers.fill(self.blobs[0], p.weight_filler)
            if self.bias_term:
                fillers.fill(self.blobs[1], p.bias_filler)

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape) + (self.num_output,))

    def _indices(self, bottom):
        x = bottom[0].data.reshape(-1)
        idx = x.astype(np.int64)
        if idx.size:
            if (idx != x).any():
                bad = x[idx != x][0]
                raise self.error(f"non-integer input {bad}")
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.input_dim:
                raise self.error(f"input index {lo if lo < 0 else hi} out of range "
                                 f"[0, {self.input_dim})")
        return idx

    def forward_cpu(self, bottom, top):
        idx = self._indices(bottom)
        y = top[0].data.reshape(-1, self.num_output)
        np.take(self.blobs[0].data, idx, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Can't backpropagate to EmbedLayer input.")
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
