"""CConvolution (official DNS, yiwenguo): Convolution with Dynamic Network Surgery masks.

Convolution's parameters and maths, with
cconvolution_param { gamma, power, c_rate, iter_stop, alpha_low, alpha_high,
weight_mask_filler, bias_mask_filler } (rules: layers/surgery.py, compress/dns.py).
blobs: [weight, bias, weight mask, bias mask] (masks: state blobs).
Defaults: gamma 0.001, power 1, iter_stop 10000, c_rate 3, hysteresis 0.9 / 1.1.
"""
from . import register
from .convolution import ConvolutionLayer
from .surgery import SurgeryMixin


@register("CConvolution")
class CConvolutionLayer(SurgeryMixin, ConvolutionLayer):
    surgery_field = "cconvolution_param"
