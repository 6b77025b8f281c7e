"""PReLU: y = max(x, 0) + a_c * min(x, 0), a learned slope per channel (He et al. 2015).

prelu_param { filler (default constant 0.25), channel_shared: false }. blobs[0] holds the
slopes: shape (channels,), or a scalar () when channel_shared. Channels are axis 1 and the
bottom needs at least 2 axes. Backward: da_c += sum dy * x over x <= 0 (accumulated), and
dx = dy * (1 if x > 0 else a_c). In place, the input is kept for backward, as Caffe does.
"""
from .. import fillers
from ..kernels import neuron as K
from ..proto import caffe_pb2
from . import register
from .neuron import NeuronLayer, flat


@register("PReLU")
class PReLULayer(NeuronLayer):
    backward_needs_bottom = True

    def layer_setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(f"number of axes of the bottom must be >= 2, got shape "
                             f"{bottom[0].shape}")
        p = self.param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not self.blobs:
            blob = self.make_blob(() if self.channel_shared else (channels,))
            if p.HasField("filler"):
                filler = p.filler
            else:
                filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            fillers.fill(blob, filler)
            self.blobs = [blob]
        expected = 1 if self.channel_shared else channels
        if self.blobs[0].count != expected:
            raise self.error(f"negative slope size {self.blobs[0].count} is inconsistent "
                             f"with prototxt config (expected {expected})")

    def _geometry(self, blob):
        channels = blob.shape[1]
        dim = blob.count_range(2)
        return channels, max(dim, 1), channels if self.channel_shared else 1

    def forward_cpu(self, bottom, top):
        self._shape = self._geometry(bottom[0])
        super().forward_cpu(bottom, top)

    def forward_flat(self, x, y):
        channels, dim, div = self._shape
        K.prelu_forward(x, flat(self.blobs[0].data), channels, dim, div, y)

    def backward_cpu(self, top, propagate_down, bottom):
        x = flat(bottom[0].data if self._bottom_copy is None else self._bottom_copy)
        dy = flat(top[0].diff)
        channels, dim, div = self._geometry(bottom[0])
        # the slope gradient first: in place, writing dx overwrites dy
        if self.param_propagate_down[0]:
            K.prelu_backward_slope(x, dy, channels, dim, div, flat(self.blobs[0].diff))
        if propagate_down[0]:
            K.prelu_backward(x, dy, flat(self.blobs[0].data), channels, dim, div,
                             flat(bottom[0].diff))
