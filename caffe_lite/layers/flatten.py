"""Flatten: merge axes [axis, end_axis] into one (Caffe's FlattenLayer).

  top shape = bottom.shape[:axis] + (prod(bottom.shape[axis:end_axis+1]),)
              + bottom.shape[end_axis+1:]
No copy: the top aliases the bottom's data in forward and the bottom aliases the top's diff
in backward, exactly as Caffe's ShareData / ShareDiff.

flatten_param:
  axis      int32, default 1 (negative counts from the end)
  end_axis  int32, default -1 (the last axis)
"""
from . import register
from .base import Layer


@register("Flatten")
class FlattenLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Flatten Layer does not allow in-place computation.")
        p = self.param.flatten_param
        shape = bottom[0].shape
        start = self.canonical_axis(bottom[0], p.axis)
        end = self.canonical_axis(bottom[0], p.end_axis)
        if end < start:
            raise self.error(f"end_axis ({p.end_axis}) comes before axis ({p.axis}) for "
                             f"bottom {shape}")
        top_shape = shape[:start] + (bottom[0].count_range(start, end + 1),) + shape[end + 1:]
        top[0].reshape(top_shape)
        # Caffe shares in Forward; sharing here too keeps net.blobs views right before it
        top[0].share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        top[0].share_data(bottom[0])

    def backward_cpu(self, top, propagate_down, bottom):
        bottom[0].share_diff(top[0])
