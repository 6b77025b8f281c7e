"""ConvolutionReLUPool (SSL fork, branch intel): Convolution, ReLU, then Pooling, as one layer.

    y = pool(relu(conv(x, w) + b))

convolution_param: as Convolution; relu_param: negative_slope (0); pooling_param: as
Pooling (pool MAX, kernel_size or kernel_h/kernel_w, stride 1, pad 0, global_pooling,
round_mode CEIL). One bottom; one top, or two with MAX (the argmax mask, as Pooling's).
blobs: the Convolution's [weight, bias].

Equal to Convolution + ReLU + Pooling in forward and backward (layers/fused.py). Where the
fork's forward-only CPU layer differs, we keep the unfused numbers: it pools MAX only (AVE
and STOCHASTIC are NOT_IMPLEMENTED), starts each max at 0 to do the ReLU (so a negative
slope is lost), clips a padded window's start before taking its end (a window that starts
in the padding reaches `pad` rows or columns further than Caffe's), and writes the mask
over the pooled values when given a second top.
"""
from . import register
from .fused import FusedLayer


@register("ConvolutionReLUPool")
class ConvolutionReLUPoolLayer(FusedLayer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 2
    stages = (("Convolution", "convolution_param"), ("ReLU", "relu_param"),
              ("Pooling", "pooling_param"))
