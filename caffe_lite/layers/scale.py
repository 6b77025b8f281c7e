"""Scale: y = x * s (+ b), s broadcast over the leading and trailing axes (Caffe's ScaleLayer).

scale_param: axis (1), num_axes (1; -1 = every axis from `axis` on), filler (constant 1),
bias_term (false), bias_filler (constant 0).
One bottom: s is a learned blob of shape bottom.shape[axis : axis + num_axes].
Two bottoms: s = bottom[1]. With bias_term a learned bias of s's shape follows (blobs:
[s, b] with one bottom, [b] with two), as Caffe's internal Bias layer adds it.
x is viewed as (outer, scale_dim, inner) as in Bias; a scalar s uses axis 0.
  dx = dy * s;   ds = sum over outer and inner of dy * x;   db = sum of dy
In place allowed (the input is kept for ds).
"""
import numpy as np

from . import register
from .base import Layer
from .bias import broadcast_dims, param_shape
from ..fillers import fill
from ..kernels.channel import scale_backward, scale_forward


@register("Scale")
class ScaleLayer(Layer):
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1
    fuses_relu = True
    fuses_relu_apart = True

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self.blobs = []
        self.learned_scale = len(bottom) == 1
        if self.learned_scale:
            blob = self.make_blob(param_shape(self, bottom[0], p.axis, p.num_axes))
            if p.HasField("filler"):
                fill(blob, p.filler)
            else:
                blob.data[...] = 1
            self.blobs.append(blob)
        self.bias_index = None
        if p.bias_term:
            shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
            bias = self.make_blob(shape)
            fill(bias, p.bias_filler)
            self.bias_index = len(self.blobs)
            self.blobs.append(bias)

    def channel_scale(self):
        """(scale, bias or an empty array) as per-channel vectors, where the layer multiplies
        its one bottom's axis 1 by a learned vector (what BatchNorm can fuse); else None."""
        p = self.param.scale_param
        if not self.learned_scale or self.blobs[0].num_axes != 1 or p.axis != 1 or \
                p.num_axes != 1:
            return None
        b = (self.blobs[self.bias_index].data.reshape(-1) if self.bias_index is not None
             else _empty(self.dtype, 1))
        return self.blobs[0].data.reshape(-1), b

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        # the shapes decide dims: checked again only when one changes (every pass of a
        # fused BatchNorm chain reshapes its Scale, 8 us in the net)
        shapes = (bottom[0].shape, self._scale(bottom).shape)
        if shapes != getattr(self, "_dims_for", None):
            self.dims = broadcast_dims(self, bottom[0], shapes[1],
                                       self.param.scale_param.axis)
            self._dims_for = shapes
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        s = self._scale(bottom).data.reshape(-1)
        x = bottom[0].data.reshape(self.dims)
        y = top[0].data.reshape(self.dims)
        b = (self.blobs[self.bias_index].data.reshape(-1) if self.bias_index is not None
             else _empty(self.dtype, 1))
        relu_top = self.fused_relu_top
        relu_top = None if relu_top is None else relu_top.data.reshape(self.dims)
        keep = _empty(self.dtype, 3)
        if bottom[0] is not top[0]:
            self._x = x
        elif self.backward_follows:
            # in place: keep the input for the scale gradient (a buffer reused across calls)
            if getattr(self, "_keep", None) is None or self._keep.shape != x.shape:
                self._keep = np.empty(x.shape, self.dtype)
            self._x = keep = self._keep
        else:
            self._x = self._keep = None     # forward only: no backward reads the input
        scale_forward(x, s, b, y, keep, self.fused_relu, relu_top)

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.dims)
        c = self.dims[1]
        want_db = self.bias_index is not None and self.param_propagate_down[self.bias_index]
        as_param = len(bottom) == 1
        scale = self._scale(bottom)
        want_ds = (as_param and self.param_propagate_down[0]) or \
            (not as_param and propagate_down[1])
        if not (want_db or want_ds or propagate_down[0]):
            return
        x = self._x if bottom[0] is top[0] else bottom[0].data.reshape(self.dims)
        if x is None and want_ds:
            raise self.error("backward after a forward that kept no copy of the input "
                             "(the net runs forward only)")
        ds = np.empty(c, self.dtype) if want_ds else _empty(self.dtype, 1)
        db = np.empty(c, self.dtype) if want_db else _empty(self.dtype, 1)
        dx = bottom[0].diff.reshape(self.dims) if propagate_down[0] else _empty(self.dtype, 3)
        scale_backward(dy, x if want_ds else _empty(self.dtype, 3), scale.data.reshape(-1),
                       ds, db, dx)
        if want_db:
            self.blobs[self.bias_index].diff.reshape(-1)[...] += db
        if want_ds:
            if as_param:
                scale.diff.reshape(-1)[...] += ds
            else:
                scale.diff.reshape(-1)[...] = ds


_EMPTY = {}


def _empty(dtype, ndim):
    key = (np.dtype(dtype), ndim)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype)
    return _EMPTY[key]
