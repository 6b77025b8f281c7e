"""DNSConvolution (NNMC): Convolution with Dynamic Network Surgery masks.

Convolution's parameters and maths, with
dns_convolution_param { gamma, power, c_rate, iter_stop, alpha_low, alpha_high,
weight_mask_filler, bias_mask_filler } (rules: layers/surgery.py, compress/dns.py).
blobs: [weight, bias, weight mask, bias mask] (masks: state blobs).
Defaults: gamma 0.001, power 1, c_rate 1, iter_stop 1e7, hysteresis 0.95 / 1.05.
"""
from . import register
from .convolution import ConvolutionLayer
from .surgery import SurgeryMixin


@register("DNSConvolution")
class DNSConvolutionLayer(SurgeryMixin, ConvolutionLayer):
    surgery_field = "dns_convolution_param"
