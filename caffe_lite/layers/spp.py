"""SPP: spatial pyramid pooling (Caffe's SPPLayer, He et al. 2014).

Level l = 0 .. pyramid_height-1 pools the (N, C, H, W) bottom into about 2^l x 2^l bins with
  kernel = ceil(H / 2^l), stride = kernel, pad = (kernel * 2^l - H + 1) // 2   (same for W)
and the levels are flattened to (N, C * bins) and concatenated along axis 1. Built, like
Caffe's, from Split, Pooling, Flatten and Concat layers, so the numbers are theirs.
With pyramid_height 1 the top is the single Pooling layer's 4-d output (Caffe's quirk).

spp_param:
  pyramid_height  uint32, required, > 0
  pool            MAX | AVE | STOCHASTIC (default MAX)
"""
from ..blob import Blob
from ..proto import caffe_pb2
from . import create_layer, register
from .base import Layer


@register("SPP")
class SPPLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.height = self.param.spp_param.pyramid_height
        if self.height <= 0:
            raise self.error("spp_param.pyramid_height must be positive")
        self.geometry = None

    def _sub(self, kind, name, pooling=None):
        lp = caffe_pb2.LayerParameter(name=f"{self.name}/{name}", type=kind)
        if pooling is not None:
            lp.pooling_param.CopyFrom(pooling)
        return create_layer(lp, self.phase, self.dtype)

    def _pooling_param(self, level, h, w):
        bins = 2 ** level
        kernel_h, kernel_w = -(-h // bins), -(-w // bins)
        pp = caffe_pb2.PoolingParameter(
            pool=self.param.spp_param.pool,   # SPP's and Pooling's enums agree
            kernel_h=kernel_h, kernel_w=kernel_w, stride_h=kernel_h, stride_w=kernel_w,
            pad_h=(kernel_h * bins - h + 1) // 2, pad_w=(kernel_w * bins - w + 1) // 2)
        return pp

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("Input must have 4 axes, corresponding to (num, channels, "
                             f"height, width); got {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        if h <= 0 or w <= 0:
            raise self.error("Input dimensions cannot be zero.")
        if self.geometry == bottom[0].shape:
            return
        self.geometry = bottom[0].shape
        if self.height == 1:
            self.pools = [self._sub("Pooling", "pool0", self._pooling_param(0, h, w))]
            self.pools[0].setup(bottom, top)
            return
        self.split = self._sub("Split", "split")
        self.split_tops = [Blob((), self.dtype) for _ in range(self.height)]
        self.split.setup(bottom, self.split_tops)
        self.pools, self.pool_tops, self.flattens, self.flat_tops = [], [], [], []
        for level in range(self.height):
            pool = self._sub("Pooling", f"pool{level}", self._pooling_param(level, h, w))
            pool_top = Blob((), self.dtype)
            pool.setup([self.split_tops[level]], [pool_top])
            flatten = self._sub("Flatten", f"flatten{level}")
            flat_top = Blob((), self.dtype)
            flatten.setup([pool_top], [flat_top])
            self.pools.append(pool)
            self.pool_tops.append(pool_top)
            self.flattens.append(flatten)
            self.flat_tops.append(flat_top)
        self.concat = self._sub("Concat", "concat")
        self.concat.setup(self.flat_tops, top)

    def forward_cpu(self, bottom, top):
        if self.height == 1:
            self.pools[0].forward(bottom, top)
            return
        self.split.forward(bottom, self.split_tops)
        for level in range(self.height):
            self.pools[level].forward([self.split_tops[level]], [self.pool_tops[level]])
            self.flattens[level].forward([self.pool_tops[level]], [self.flat_tops[level]])
        self.concat.forward(self.flat_tops, top)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.height == 1:
            self.pools[0].backward(top, propagate_down, bottom)
            return
        self.concat.backward(top, [True] * self.height, self.flat_tops)
        for level in range(self.height):
            self.flattens[level].backward([self.flat_tops[level]], [True],
                                          [self.pool_tops[level]])
            self.pools[level].backward([self.pool_tops[level]], [True],
                                       [self.split_tops[level]])
        self.split.backward(self.split_tops, [True], bottom)
