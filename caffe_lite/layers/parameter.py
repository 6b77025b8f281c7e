"""Parameter: a learnable blob as the layer's only top, no bottoms (Caffe's ParameterLayer).

  top.data = blobs[0].data (aliased, so solver updates show up at once)
  blobs[0].diff += top.diff
Caffe aliases the diff too, which makes the consumer's gradient overwrite the parameter's;
accumulating gives the same value at iter_size 1 and the layer contract's sum otherwise.
The blob starts at zeros (no filler), unless the net loads it from a caffemodel.

parameter_param:
  shape  BlobShape of the parameter and of the top
"""
from . import register
from .base import Layer


@register("Parameter")
class ParameterLayer(Layer):
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        shape = tuple(self.param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.error(f"parameter_param.shape dims must be >= 0, got {shape}")
        if not self.blobs:
            self.blobs = [self.make_blob(shape)]
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def backward_cpu(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff.reshape(self.blobs[0].shape)
