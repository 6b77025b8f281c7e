"""Crop: cut bottom[0] to the shape of bottom[1] from `axis` on (Caffe's CropLayer).

  top = bottom[0][..., o_a : o_a + s_a, o_{a+1} : ..., ...]   for axes a >= axis,
  with s = bottom[1].shape; axes before `axis` are kept whole.
  bottom[0].diff = top.diff placed back at the offsets, zeros elsewhere.
bottom[1] only supplies a shape: it gets no gradient (zeros when asked for one).

crop_param:
  axis    int32, default 2 (negative counts from the end)
  offset  repeated uint32: none (all 0), one for every cropped axis, or one per cropped axis
"""
import numpy as np

from . import register
from .base import Layer


@register("Crop")
class CropLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.crop_param
        start = self._start_axis(bottom)
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            raise self.error(f"number of offset values specified ({len(p.offset)}) must be "
                             f"equal to the number of dimensions following axis {start}")

    def _start_axis(self, bottom):
        return self.canonical_axis(bottom[0], self.param.crop_param.axis)

    def reshape(self, bottom, top):
        p = self.param.crop_param
        start = self._start_axis(bottom)
        data_shape, ref_shape = bottom[0].shape, bottom[1].shape
        new_shape = list(data_shape)
        index = []
        for i, size in enumerate(data_shape):
            if i < start:
                index.append(slice(None))
                continue
            if i >= len(ref_shape):
                raise self.error(f"the reference bottom {ref_shape} has no axis {i} to crop "
                                 f"{data_shape} to")
            if len(p.offset) > 1:
                offset = p.offset[i - start]
            else:
                offset = p.offset[0] if p.offset else 0
            if size - offset < ref_shape[i]:
                raise self.error(f"the crop for dimension {i} is out-of-bounds with size "
                                 f"{ref_shape[i]} and offset {offset}")
            new_shape[i] = ref_shape[i]
            index.append(slice(offset, offset + ref_shape[i]))
        self.index = tuple(index)
        top[0].reshape(new_shape)

    def forward_cpu(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data[self.index])

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            diff[self.index] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = 0
