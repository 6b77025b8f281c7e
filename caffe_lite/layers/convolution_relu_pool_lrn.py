"""ConvolutionReLUPoolLRN (SSL fork, branch intel): Convolution, ReLU, Pooling, then LRN, as
one layer (CaffeNet's conv1 and conv2 in the fork's models/bvlc_reference_caffenet).

    y = lrn(pool(relu(conv(x, w) + b)))

convolution_param: as Convolution; relu_param: negative_slope (0); pooling_param: as
Pooling; lrn_param: local_size (5), alpha (1), beta (0.75), k (1), norm_region
(ACROSS_CHANNELS). One bottom, one top. blobs: the Convolution's [weight, bias].

Equal to Convolution + ReLU + Pooling + LRN in forward and backward (layers/fused.py).
Where the fork's forward-only, float-only CPU layer differs we keep the unfused numbers:
besides ConvolutionReLUPool's pooling differences, its LRN runs ACROSS_CHANNELS only and
its vector loop leaves the last (C * PH * PW) % 8 outputs of each image unwritten.
"""
from . import register
from .fused import FusedLayer


@register("ConvolutionReLUPoolLRN")
class ConvolutionReLUPoolLRNLayer(FusedLayer):
    exact_num_bottom = 1
    exact_num_top = 1
    stages = (("Convolution", "convolution_param"), ("ReLU", "relu_param"),
              ("Pooling", "pooling_param"), ("LRN", "lrn_param"))
