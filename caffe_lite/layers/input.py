"""Input: the net's entry points, filled by the caller (Caffe's InputLayer).

input_param { shape { dim: ... } }: one shape for every top, one per top, or none (the tops
stay empty until the caller reshapes them). Reshape leaves the tops alone, so
`net.blobs['data'].reshape(...)` followed by `net.reshape()` resizes the net, as in pycaffe.
No bottoms, at least one top; forward and backward do nothing.
"""
from . import register
from .base import Layer


@register("Input")
class InputLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(f"Must specify 'shape' once, once per top blob, or not at all: "
                             f"{len(top)} tops vs. {len(shapes)} shapes")
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        # Inputs are shaped from outside (layer_setup or the caller), never from bottoms.
        pass

    def forward_cpu(self, bottom, top):
        pass
