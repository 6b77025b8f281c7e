"""Accuracy: the fraction of labels found among the top_k scores (Caffe's AccuracyLayer).

accuracy_param: top_k (1), axis (1: the class axis), ignore_label (unset: none).
With scores viewed as (outer, classes, inner) and l = int(label[i, j]), position (i, j)
counts as correct when fewer than top_k classes score >= the true class's score besides the
true class itself (ties count against it). Ignored labels are skipped.
  top[0] = correct / counted (0 when nothing is counted)
  top[1] (optional, one per class) = correct with label c / labels equal to c (0 if none)
Bottoms: scores, labels. No gradient (Caffe: NOT_IMPLEMENTED if asked for one).
"""
import numpy as np

from . import register
from .base import Layer
from ..kernels.accuracy import count_correct
from .softmax import softmax_dims


@register("Accuracy")
class AccuracyLayer(Layer):
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.has_ignore = p.HasField("ignore_label")
        self.ignore_label = p.ignore_label

    def reshape(self, bottom, top):
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            raise self.error(f"top_k must be less than or equal to the number of classes "
                             f"(top_k {self.top_k}, scores {bottom[0].shape}, labels "
                             f"{bottom[1].shape})")
        self.axis, self.dims = softmax_dims(self, bottom[0], self.param.accuracy_param.axis)
        outer, classes, inner = self.dims
        if outer * inner != bottom[1].count:
            raise self.error(
                "Number of labels must match number of predictions; e.g., if label axis == 1 "
                "and prediction shape is (N, C, H, W), label count (number of labels) must be "
                f"N*H*W, with integer values in {{0, 1, ..., C-1}}; got predictions "
                f"{bottom[0].shape} and {bottom[1].count} labels")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((classes,))

    def forward_cpu(self, bottom, top):
        outer, classes, inner = self.dims
        scores = bottom[0].data.reshape(self.dims)
        if not self.has_ignore and len(top) == 1:
            # the common case in one kernel (a deploy net's last layer at batch 1)
            label = bottom[1].data.reshape(outer, inner)
            correct = count_correct(scores, label, self.top_k) if label.size else -1
            if correct >= 0:
                dt = self.dtype.type
                top[0].data[...] = dt(correct) / dt(label.size)
                return
        label = np.trunc(bottom[1].data.reshape(outer, inner))
        keep = ~(label == self.ignore_label) if self.has_ignore else np.ones(label.shape, bool)
        bad = keep & ~((label >= 0) & (label < classes))
        if bad.any():
            raise self.error(f"label values must be in [0, {classes}) (or the ignore_label); "
                             f"got {label[bad][0]}")
        lab = np.where(keep, label, 0).astype(np.int64)
        true_score = np.take_along_axis(scores, lab[:, None, :], axis=1)
        # the true class counts itself: correct when at most top_k classes score >= it
        at_least = (scores >= true_score).sum(axis=1)
        correct = keep & (at_least <= self.top_k)
        dt = self.dtype.type
        count = int(keep.sum())
        top[0].data[...] = dt(0) if count == 0 else dt(int(correct.sum())) / dt(count)
        if len(top) > 1:
            seen = np.bincount(lab[keep], minlength=classes).astype(self.dtype)
            hits = np.bincount(lab[correct], minlength=classes).astype(self.dtype)
            per_class = np.zeros(classes, self.dtype)
            np.divide(hits, seen, out=per_class, where=seen != 0)
            top[1].data[...] = per_class

    def backward_cpu(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("Accuracy has no backward (Caffe: NOT_IMPLEMENTED)")
