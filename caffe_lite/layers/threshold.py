"""Threshold: y = 1 if x > threshold else 0.

threshold_param { threshold: 0 }. Not differentiable: as in Caffe there is no backward, and
asking for one is an error.
"""
from ..kernels import neuron as K
from . import register
from .neuron import NeuronLayer


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.threshold = self.scalar(self.param.threshold_param.threshold)

    def forward_flat(self, x, y):
        K.elementwise(K.threshold_forward, x, self.threshold, y)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Threshold has no backward (not differentiable)")
