"""INQConvolution (NNMC): Convolution with Incremental Network Quantization.

Convolution's parameters and maths, with
inq_convolution_param { portion (twice: before, after), num_quantum_values 8, weight_mask_filler,
bias_mask_filler } (rules: layers/incremental_quantization.py, compress/inq.py).
blobs: [weight, bias, weight mask, bias mask] (masks: state blobs, 1 = float, 0 = frozen).
"""
from . import register
from .incremental_quantization import IncrementalQuantizationMixin
from .convolution import ConvolutionLayer


@register("INQConvolution")
class INQConvolutionLayer(IncrementalQuantizationMixin, ConvolutionLayer):
    quantization_field = "inq_convolution_param"
