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
"""
import numpy as np

from . import register
from .base import Layer
from .softmax import softmax_dims
from ..kernels.losses import VALID, normalization_mode, normalizer
from ..kernels.softmax import softmax_forward, softmax_loss_backward, softmax_loss_forward

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
        loss, count = softmax_loss_forward(prob, label, self.has_ignore, self.ignore_label)
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
        softmax_loss_backward(self.prob.data.reshape(self.dims),
                              bottom[1].data.reshape(outer, inner), self.has_ignore,
                              self.ignore_label, scale, bottom[0].diff.reshape(self.dims))
