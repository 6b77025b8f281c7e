"""InnerProductReLUDropout (SSL fork, branch intel): InnerProduct, ReLU, then Dropout, as one
layer.

    y = dropout(relu(x W^T + b))   dropout: TRAIN y = v * mask / (1 - p), TEST y = v

inner_product_param: as InnerProduct (num_output, bias_term true, weight_filler,
bias_filler, axis 1, transpose false); relu_param: negative_slope (0); dropout_param:
dropout_ratio p (0.5). One bottom, one top. blobs: the InnerProduct's [weight, bias].
The dropout mask comes from caffe_lite.common.rng(), as the Dropout layer's.

Equal to InnerProduct + ReLU + Dropout in forward and backward (layers/fused.py). The fork's
CPU layer is an inference kernel: its forward never drops (not even in TRAIN); its default
sparse path (weights in CSR blocks of 128 input columns, built when a caffemodel loads)
applies a plain ReLU whatever negative_slope says; and its backward is InnerProduct's
alone, without the ReLU's or the dropout's gate. We keep the unfused numbers in both phases.
"""
from . import register
from .fused import FusedLayer


@register("InnerProductReLUDropout")
class InnerProductReLUDropoutLayer(FusedLayer):
    exact_num_bottom = 1
    exact_num_top = 1
    stages = (("InnerProduct", "inner_product_param"), ("ReLU", "relu_param"),
              ("Dropout", "dropout_param"))
