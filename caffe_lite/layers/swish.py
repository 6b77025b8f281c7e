"""Swish: x * sigmoid(beta * x) (Caffe's SwishLayer, Ramachandran et al. 2017).

  top = x * s,  s = sigmoid(beta * x)
  bottom.diff = top.diff * (beta * top + s * (1 - beta * top))
Keeps s for backward; backward reads the top, so it works in place.

swish_param:
  beta  float, default 1
"""
import numpy as np

from ..kernels import swish as K
from . import register
from .base import Layer


@register("Swish")
class SwishLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.beta = self.dtype.type(self.param.swish_param.beta)
        self.sig = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
        if self.sig is None or self.sig.shape != bottom[0].shape:
            self.sig = np.zeros(bottom[0].shape, self.dtype)

    def forward_cpu(self, bottom, top):
        K.swish_forward(bottom[0].data, self.beta, self.sig, top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            K.swish_backward(top[0].data, top[0].diff, self.sig, self.beta, bottom[0].diff)
