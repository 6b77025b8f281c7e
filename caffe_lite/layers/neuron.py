"""NeuronLayer: one bottom, one top of the same shape, element-wise (Caffe's NeuronLayer).

Neuron layers may run in place (top blob == bottom blob). A subclass whose backward reads
the bottom data sets `backward_needs_bottom`; an in-place forward then keeps a copy of the
input first, so the gradient is the out-of-place one (Caffe's PReLU does this; we do it for
every such layer).
"""
from abc import abstractmethod

import numpy as np

from .base import Layer


def flat(array):
    """A 1-d view of a C-contiguous array, as the kernels take."""
    return array.reshape(-1)


class NeuronLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1
    #: backward reads bottom data: an in-place forward saves a copy of it
    backward_needs_bottom = False

    def __init__(self, param, phase=0, dtype=np.float32):
        super().__init__(param, phase, dtype)
        self._bottom_copy = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    @staticmethod
    def in_place(bottom, top):
        return top[0] is bottom[0] or np.may_share_memory(top[0].data, bottom[0].data)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        if self.backward_needs_bottom and self.in_place(bottom, top):
            if self._bottom_copy is None or self._bottom_copy.shape != x.shape:
                self._bottom_copy = np.empty_like(x)
            np.copyto(self._bottom_copy, x)
        else:
            self._bottom_copy = None
        self.forward_flat(flat(x), flat(top[0].data))

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data if self._bottom_copy is None else self._bottom_copy
        self.backward_flat(flat(x), flat(top[0].data), flat(top[0].diff),
                           flat(bottom[0].diff))

    def scalar(self, value):
        """A hyper-parameter in the layer's dtype (Caffe keeps them as Dtype members)."""
        return self.dtype.type(value)

    # --- what a subclass writes -------------------------------------------------------------
    @abstractmethod
    def forward_flat(self, x, y):
        """y = f(x) over flat arrays (y may be x)."""

    def backward_flat(self, x, y, dy, dx):
        """dx = dy * f'(x); x is the forward input, y the output (dx may be dy). Layers whose
        backward needs more than this (PReLU's slope, Threshold's refusal) override
        backward_cpu instead."""
        raise self.error("this layer does not backpropagate element-wise")
