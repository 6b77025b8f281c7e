"""Deconvolution (Caffe's DeconvolutionLayer): the transpose of Convolution.

    y = conv_backward_data(x) + b         (each input pixel scatters a weighted kernel)
    out = stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad

convolution_param as for Convolution (num_output is the number of OUTPUT channels).
blobs: [weight (C_in, num_output/group, kh, kw), bias (num_output,)]: the weight is stored
as the matching Convolution's, with input and output channels swapped. Backward: dx is the
convolution of dy with the weight; the weight and bias diffs accumulate.
"""
from ..kernels.conv import deconv2d_backward, deconv2d_forward
from . import register
from .convolution import ConvolutionLayer


@register("Deconvolution")
class DeconvolutionLayer(ConvolutionLayer):
    reverse_dimensions = True

    def output_spatial(self, spatial):
        return self.geometry.deconv_output_shape(*spatial)

    def make_engine(self):
        """None: SSL's conv_mode engines are convolutions; a deconvolution has its own pass."""
        return None

    def forward_cpu(self, bottom, top):
        w = self.effective_weight()
        bias = self.effective_bias()
        for b, t in zip(bottom, top):
            deconv2d_forward(b.data.reshape(self._in4), w, bias, self.geometry,
                             t.data.reshape(self._out4))

    def backward_cpu(self, top, propagate_down, bottom):
        w = self.effective_weight()
        dw = self.blobs[0].diff if self.param_propagate_down[0] else None
        db = (self.blobs[1].diff if self.bias_term and self.param_propagate_down[1]
              else None)
        for i, (b, t) in enumerate(zip(bottom, top)):
            dx = b.diff.reshape(self._in4) if propagate_down[i] else None
            deconv2d_backward(b.data.reshape(self._in4), w, t.diff.reshape(self._out4),
                              self.geometry, dx=dx, dw=dw, db=db)
