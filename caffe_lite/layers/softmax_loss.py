"""SoftmaxWithLoss: softmax followed by the multinomial logistic loss (Caffe's
SoftmaxWithLossLayer), normalised as Caffe's LossLayer does.

softmax_param.axis (1): the class axis; loss_param: ignore_label (unset: none),
normalization (FULL | VALID | BATCH_SIZE | NONE, default VALID), normalize (deprecated:
when normalization is unset, true means VALID and false BATCH_SIZE).
With outer = count(0, axis), inner = count(axis + 1) and l = int(label[i, j]):
  loss = -sum_{(i, j) not ignored} log(max(prob[i, l, j], FLT_MIN)) / normalizer
  normalizer: FULL outer*inner, VALID the number of non-ignored labels, BATCH_SIZE outer,
  NONE 1; never below 1.
  d x = top_diff[0] / normalizer * (prob - onehot(l)), zero where the label is ignored.
Bottoms: scores, labels (outer*inner of them). Tops: the loss, optionally the probabilities.
No gradient to the labels.

loss_param.label_weights (caffe-jacinto 0.17; repeated float, unset: every weight 1): one
weight per class, as many as the class axis has (else an error; the fork reads past the end).
Each non-ignored position's loss term is multiplied by w[l], and so is its gradient:
  loss = -sum w[l] log(max(prob[i, l, j], FLT_MIN)) / normalizer
  d x = top_diff[0] / normalizer * w[l] * (prob - onehot(l))
The normalizer counts positions, not weights (VALID: the non-ignored labels), as the fork's.
Where we differ: caffe-jacinto 0.17 weights only the loss it reports; its backward (CPU and
GPU) keeps the unweighted gradient, so there the weights never change training. Here the
gradient is that of the loss reported, which is what per-class weights are for.
"""
import numpy as np

from . import register
from .base import Layer
from .softmax import softmax_dims
from ..kernels.losses import VALID, normalization_mode, normalizer
from ..kernels.softmax import (FLT_MIN, softmax_forward, softmax_loss_backward,
                               softmax_loss_forward)

@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(Layer):
    exact_num_bottom = 2
    min_top = 1
    max_top = 2
    is_loss = True

    def layer_setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = lp.ignore_label
        self.mode = normalization_mode(lp.HasField("normalization"), lp.normalization,
                                       lp.HasField("normalize"), lp.normalize, VALID)
        self.prob = self.make_blob(())
        self.label_weights = np.array(lp.label_weights, dtype=self.dtype) \
            if len(lp.label_weights) else None

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(f"The data and label should have the same first dimension "
                             f"({bottom[0].shape} vs {bottom[1].shape}).")
        self.axis, self.dims = softmax_dims(self, bottom[0], self.param.softmax_param.axis)
        outer, channels, inner = self.dims
        if outer * inner != bottom[1].count:
            raise self.error(
                "Number of labels must match number of predictions; e.g., if softmax axis == "
                "1 and prediction shape is (N, C, H, W), label count (number of labels) must "
                f"be N*H*W, with integer values in {{0, 1, ..., C-1}}; got predictions "
                f"{bottom[0].shape} and {bottom[1].count} labels")
        if self.label_weights is not None and self.label_weights.size != channels:
            raise self.error(f"loss_param.label_weights has {self.label_weights.size} values, "
                             f"but there are {channels} classes (one weight per class)")
        top[0].reshape(())
        self.prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _labels(self, bottom):
        outer, channels, inner = self.dims
        label = bottom[1].data.reshape(outer, inner)
        lab = np.trunc(label)
        bad = ~((lab >= 0) & (lab < channels))
        if self.has_ignore:
            bad &= lab != self.ignore_label
        if bad.any():
            raise self.error(f"label values must be in [0, {channels}) (or the ignore_label); "
                             f"got {label[bad][0]}")
        return label

    def forward_cpu(self, bottom, top):
        prob = self.prob.data.reshape(self.dims)
        softmax_forward(bottom[0].data.reshape(self.dims), prob)
        label = self._labels(bottom)
        if self.label_weights is None:
            loss, count = softmax_loss_forward(prob, label, self.has_ignore, self.ignore_label)
        else:
            loss, count = self._weighted_loss(prob, label)
        self.valid_count = count
        outer, _, inner = self.dims
        norm = normalizer(self.mode, outer, inner, count)
        top[0].data[...] = self.dtype.type(loss) / self.dtype.type(norm)
        if len(top) == 2:
            top[1].share_data(self.prob)

    def backward_cpu(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("SoftmaxWithLoss Layer cannot backpropagate to label inputs.")
        if not propagate_down[0]:
            return
        outer, _, inner = self.dims
        norm = normalizer(self.mode, outer, inner, self.valid_count)
        scale = self.dtype.type(top[0].diff.reshape(-1)[0]) / self.dtype.type(norm)
        label = bottom[1].data.reshape(outer, inner)
        diff = bottom[0].diff.reshape(self.dims)
        softmax_loss_backward(self.prob.data.reshape(self.dims), label, self.has_ignore,
                              self.ignore_label, scale, diff)
        if self.label_weights is not None:
            # ignored positions already hold 0, whatever weight their clipped label picks
            diff *= self._position_weights(label)[:, None, :]

    def _position_weights(self, label):
        """w[int(label)] at each (outer, inner) position; an ignored label's value (which may
        lie outside the classes) is clipped, its weight never counts."""
        return self.label_weights[self._classes(label)]

    def _classes(self, label):
        return np.clip(label.astype(np.int64), 0, self.label_weights.size - 1)

    def _weighted_loss(self, prob, label):
        """(sum of w[l] * -log(max(prob of l, FLT_MIN)) over counted positions, their count)."""
        valid = np.ones(label.shape, dtype=bool)
        if self.has_ignore:
            valid = label.astype(np.int64) != self.ignore_label
        classes = self._classes(label)
        picked = np.take_along_axis(prob, classes[:, None, :], axis=1)[:, 0, :]
        terms = -np.log(np.maximum(picked, self.dtype.type(FLT_MIN)))
        terms *= self.label_weights[classes]
        return terms[valid].sum(dtype=self.dtype), int(valid.sum())
