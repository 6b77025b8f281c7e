"""Pooling (Caffe's PoolingLayer): MAX, AVE and STOCHASTIC over the two spatial axes.

pooling_param: pool (MAX | AVE | STOCHASTIC, default MAX); kernel_size or kernel_h + kernel_w;
pad (0) or pad_h + pad_w; stride (1) or stride_h + stride_w; global_pooling (false: the
kernel is the whole H x W, pad 0 and stride 1 only); round_mode (CEIL | FLOOR, default CEIL).
  pooled = round((H + 2 pad - kernel) / stride) + 1, minus one when pad > 0 and the last
  window would start in the padding.
  MAX: y = max of the window clipped to the image; a second top receives the argmax index
       h * W + w within the plane (as a float), and backward then reads it from that top.
  AVE: y = sum(window clipped to the image) / (window clipped to the padded image).
  STOCHASTIC (Caffe: GPU only, no padding): TRAIN picks one element with probability
       x / sum(window) (for non-negative x) and routes the gradient to it; TEST outputs
       sum(x^2) / sum(x), and its backward is that function's gradient (Caffe has no TEST
       backward: its GPU kernel reads a pick index that TEST never writes).
Input 4-d (N, C, H, W); one bottom, one or two tops.
"""
import numpy as np

from . import register
from .base import Layer
from ..common import TRAIN, rng
from ..kernels import pooling as K
from ..proto import caffe_pb2

MAX, AVE, STOCHASTIC = K.MAX, K.AVE, K.STOCHASTIC  # PoolingParameter.PoolMethod
FLOOR = caffe_pb2.PoolingParameter.FLOOR


@register("Pooling")
class PoolingLayer(Layer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        self.global_pooling = p.global_pooling
        has_kernel = p.HasField("kernel_size")
        has_hw = p.HasField("kernel_h") and p.HasField("kernel_w")
        if self.global_pooling:
            if has_kernel or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("With Global_pooling: true Filter size cannot specified")
        else:
            if has_kernel == has_hw:
                raise self.error("Filter size is kernel_size OR kernel_h and kernel_w; "
                                 "not both" if has_kernel else
                                 "For non-square filters both kernel_h and kernel_w are "
                                 "required.")
        if p.HasField("pad") and (p.HasField("pad_h") or p.HasField("pad_w")) or \
                p.HasField("pad_h") != p.HasField("pad_w"):
            raise self.error("pad is pad OR pad_h and pad_w are required.")
        if p.HasField("stride") and (p.HasField("stride_h") or p.HasField("stride_w")) or \
                p.HasField("stride_h") != p.HasField("stride_w"):
            raise self.error("Stride is stride OR stride_h and stride_w are required.")
        if not self.global_pooling:
            if has_kernel:
                self.kernel_h = self.kernel_w = p.kernel_size
            else:
                self.kernel_h, self.kernel_w = p.kernel_h, p.kernel_w
            if self.kernel_h <= 0 or self.kernel_w <= 0:
                raise self.error("Filter dimensions cannot be zero.")
        if p.HasField("pad_h"):
            self.pad_h, self.pad_w = p.pad_h, p.pad_w
        else:
            self.pad_h = self.pad_w = p.pad
        if p.HasField("stride_h"):
            self.stride_h, self.stride_w = p.stride_h, p.stride_w
        else:
            self.stride_h = self.stride_w = p.stride
        if self.stride_h <= 0 or self.stride_w <= 0:
            raise self.error("Stride dimensions must be positive.")
        if self.global_pooling and (self.pad_h or self.pad_w or self.stride_h != 1
                                    or self.stride_w != 1):
            raise self.error("With Global_pooling: true; only pad = 0 and stride = 1")
        if self.method not in (MAX, AVE, STOCHASTIC):
            raise self.error(f"Unknown pooling method {self.method}.")
        if (self.pad_h or self.pad_w) and self.method == STOCHASTIC:
            raise self.error("Padding implemented only for average and max pooling.")
        if not self.global_pooling and (self.pad_h >= self.kernel_h
                                        or self.pad_w >= self.kernel_w):
            raise self.error(f"pad ({self.pad_h}, {self.pad_w}) must be smaller than the "
                             f"kernel ({self.kernel_h}, {self.kernel_w})")
        self.ceil_mode = p.round_mode != FLOOR

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("Input must have 4 axes, corresponding to (num, channels, "
                             f"height, width); got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        if self.global_pooling:
            self.kernel_h, self.kernel_w = h, w
        out_h = K.pooled_size(h, self.kernel_h, self.pad_h, self.stride_h, self.ceil_mode)
        out_w = K.pooled_size(w, self.kernel_w, self.pad_w, self.stride_w, self.ceil_mode)
        if out_h <= 0 or out_w <= 0:
            raise self.error(f"kernel ({self.kernel_h}, {self.kernel_w}) does not fit the "
                             f"padded input {h}x{w} (pad {self.pad_h}, {self.pad_w})")
        for t in top:
            if t is bottom[0]:
                raise self.error("Pooling cannot run in place")
            t.reshape((n, c, out_h, out_w))
        if getattr(self, "_index", None) is None or self._index.shape != top[0].shape:
            self._index = np.empty(top[0].shape, np.int64)

    def _geometry(self):
        return (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w,
                self.pad_h, self.pad_w)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        y = top[0].data
        if self.method == STOCHASTIC and self.phase == TRAIN:
            # U(0, 1] as curand gives it
            r = (1.0 - rng().random(y.shape)).astype(x.dtype)
            K.sto_pool_forward_train(x, self.kernel_h, self.kernel_w, self.stride_h,
                                     self.stride_w, r, y, self._index)
        else:
            # no backward to read the winners, no second top to show them: values only
            keep = self.backward_follows or len(top) > 1
            K.pool_forward(x, self.method, *self._geometry(), y, self._index if keep else None)
        if len(top) > 1:
            # Caffe only writes the mask for MAX; the second top keeps its shape
            top[1].data[...] = self._index if self.method == MAX else 0

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        dx = bottom[0].diff
        if self.method == STOCHASTIC and self.phase != TRAIN:
            def planes(a):
                return a.reshape((-1,) + a.shape[2:])
            K.sto_pool_backward_test(planes(bottom[0].data), planes(top[0].data), planes(dy),
                                     self.kernel_h, self.kernel_w, self.stride_h,
                                     self.stride_w, planes(dx))
            return
        index = self._index
        if self.method == MAX and len(top) > 1:
            index = top[1].data.astype(np.int64)
        K.pool_backward(dy, self.method, *self._geometry(), index, dx)
