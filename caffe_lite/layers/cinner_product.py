"""CInnerProduct (official DNS, yiwenguo): InnerProduct with Dynamic Network Surgery masks.

InnerProduct's parameters and maths, with
cinner_product_param { gamma, power, c_rate, iter_stop, alpha_low, alpha_high,
weight_mask_filler, bias_mask_filler } (rules: layers/surgery.py, compress/dns.py).
blobs: [weight, bias, weight mask, bias mask] (masks: state blobs).
Defaults: gamma 0.001, power 1, iter_stop 8000, c_rate 3, hysteresis 0.9 / 1.1.
"""
from . import register
from .inner_product import InnerProductLayer
from .surgery import SurgeryMixin


@register("CInnerProduct")
class CInnerProductLayer(SurgeryMixin, InnerProductLayer):
    surgery_field = "cinner_product_param"
