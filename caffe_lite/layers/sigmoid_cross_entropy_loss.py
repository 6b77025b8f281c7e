"""SigmoidCrossEntropyLoss: E = -1/n sum [t log p + (1 - t) log(1 - p)], p = sigmoid(x).

bottom[0] scores x, bottom[1] targets t in [0, 1] (same count). The loss is summed in
Caffe's stable form x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])).
loss_param { ignore_label (unset), normalization, normalize }: as BVLC master, targets with
int(t) == ignore_label are skipped; n comes from `normalization` when set, else from the
deprecated `normalize` (true: VALID, false: BATCH_SIZE), else BATCH_SIZE (the historic
default, unlike other losses). Backward: dx = w / n * (p - t); no gradient to the targets.
"""
import numpy as np

from ..kernels import losses as L
from ..kernels import neuron as K
from . import register
from .base import Layer


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def layer_setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore_label = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        self.normalization = L.normalization_mode(
            lp.HasField("normalization"), lp.normalization, lp.HasField("normalize"),
            lp.normalize, L.BATCH_SIZE)
        self._prob = None
        self._normalizer = self.dtype.type(1)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"the data and label should have the same first dimension "
                             f"({bottom[0].shape} vs {bottom[1].shape})")
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same count ({bottom[0].shape} vs "
                             f"{bottom[1].shape})")
        top[0].reshape(())
        self.outer_num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.inner_num = bottom[0].count_range(1)
        if self._prob is None or self._prob.shape != bottom[0].shape:
            self._prob = np.zeros(bottom[0].shape, self.dtype)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        K.sigmoid_forward(x, self._prob.reshape(-1))
        loss, valid = L.sigmoid_cross_entropy_forward(
            x, bottom[1].data.reshape(-1), self.has_ignore_label, self.ignore_label)
        self._normalizer = self.dtype.type(
            L.normalizer(self.normalization, self.outer_num, self.inner_num, valid))
        top[0].data[...] = self.dtype.type(loss) / self._normalizer

    def backward_cpu(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs")
        if propagate_down[0]:
            scale = top[0].diff.reshape(-1)[0] / self._normalizer
            L.sigmoid_cross_entropy_backward(
                self._prob.reshape(-1), bottom[1].data.reshape(-1), self.has_ignore_label,
                self.ignore_label, scale, bottom[0].diff.reshape(-1))
