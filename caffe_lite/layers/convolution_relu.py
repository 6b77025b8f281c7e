"""ConvolutionReLU (SSL fork, branch intel): Convolution then ReLU, as one layer.

    y = relu(conv(x, w) + b)      relu(v) = max(v, 0) + negative_slope * min(v, 0)

convolution_param: as Convolution (num_output, kernel_size, stride 1, pad 0, group 1,
bias_term true, weight_filler, bias_filler, conv_mode LOWERED_GEMM, ...);
relu_param: negative_slope (0).
blobs: the Convolution's [weight (num_output, C/group, kh, kw), bias (num_output,)].
Several bottom/top pairs share the weights, as in Convolution.

Equal to Convolution + ReLU in forward and backward (layers/fused.py composes the two).
The fork's CPU layer has forward only (its Backward_cpu is `assert(false)`); it adds the
bias inside its direct convolution for DIRECT_SCONV, which gives the same numbers.
"""
from . import register
from .fused import FusedLayer


@register("ConvolutionReLU")
class ConvolutionReLULayer(FusedLayer):
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    stages = (("Convolution", "convolution_param"), ("ReLU", "relu_param"))
