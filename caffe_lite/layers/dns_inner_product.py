"""DNSInnerProduct (NNMC): InnerProduct with Dynamic Network Surgery masks.

InnerProduct's parameters and maths, with
dns_inner_product_param { gamma, power, c_rate, iter_stop, alpha_low, alpha_high,
weight_mask_filler, bias_mask_filler } (rules: layers/surgery.py, compress/dns.py).
blobs: [weight, bias, weight mask, bias mask] (masks: state blobs).
Defaults: gamma 0.001, power 1, c_rate 1, iter_stop 1e6, hysteresis 0.95 / 1.05.
"""
from . import register
from .inner_product import InnerProductLayer
from .surgery import SurgeryMixin


@register("DNSInnerProduct")
class DNSInnerProductLayer(SurgeryMixin, InnerProductLayer):
    surgery_field = "dns_inner_product_param"
