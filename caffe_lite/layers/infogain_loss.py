"""InfogainLoss (BVLC master): a softmax loss weighted by an "information gain" matrix H.

p = softmax(x) over `axis`; E = -1/n sum_i sum_l H[label_i, l] log(max(p_il, 1e-20)).
H (num_labels x num_labels) is bottom[2] when given, else read once from the BlobProto file
infogain_loss_param.source. With H = I this is SoftmaxWithLoss.
infogain_loss_param { source, axis: 1 }; loss_param { ignore_label (unset),
normalization: VALID } (the deprecated `normalize` is rejected, as in master).
Tops: the loss, and optionally the softmax probabilities. Backward:
dx_l = w / n * (p_l * sum_k H[label, k] - H[label, l]); none to the labels or H.
(Caffe 1.0's InfogainLoss took probabilities and had no softmax; this follows master.)
"""
import numpy as np

from ..io.binary import read_blob_proto
from ..io.blobs import blob_proto_to_array
from ..kernels import losses as L
from . import register
from .base import Layer


@register("InfogainLoss")
class InfogainLossLayer(Layer):
    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2
    is_loss = True

    def layer_setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore_label = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if lp.HasField("normalize"):
            raise self.error('loss_param.normalize is deprecated: use "normalization"')
        self.normalization = lp.normalization
        self._infogain = None
        if len(bottom) < 3:
            ip = self.param.infogain_loss_param
            if not ip.HasField("source"):
                raise self.error("infogain matrix source must be specified "
                                 "(infogain_loss_param.source or a third bottom)")
            bp = read_blob_proto(ip.source)
            self._infogain = np.ascontiguousarray(
                blob_proto_to_array(bp, name=ip.source), self.dtype).reshape(-1)
        self._prob = None
        self._row_sums = None

    def reshape(self, bottom, top):
        x = bottom[0]
        if x.shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"the data and label should have the same first dimension "
                             f"({x.shape} vs {bottom[1].shape})")
        top[0].reshape(())
        self.axis = self.canonical_axis(x, self.param.infogain_loss_param.axis)
        self.outer_num = x.count_range(0, self.axis)
        self.inner_num = x.count_range(self.axis + 1)
        self.num_labels = x.shape[self.axis]
        if self.outer_num * self.inner_num != bottom[1].count:
            raise self.error(
                f"number of labels must match number of predictions; e.g., if infogain "
                f"axis == 1 and prediction shape is (N, C, H, W), label count (number of "
                f"labels) must be N*H*W, with integer values in {{0, 1, ..., C-1}} "
                f"(predictions {x.shape}, labels {bottom[1].shape})")
        infogain = self._infogain if len(bottom) < 3 else bottom[2].data
        if infogain.size != self.num_labels * self.num_labels:
            raise self.error(f"the infogain matrix must be {self.num_labels}x"
                             f"{self.num_labels}, got {infogain.size} values")
        if self._prob is None or self._prob.shape != x.shape:
            self._prob = np.zeros(x.shape, self.dtype)
        if self._row_sums is None or self._row_sums.size != self.num_labels:
            self._row_sums = np.zeros(self.num_labels, self.dtype)
            if len(bottom) < 3:
                # H is fixed: sum its rows once
                L.infogain_row_sums(self._infogain, self.num_labels, self._row_sums)
        if len(top) >= 2:
            top[1].reshape_like(x)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def _matrix(self, bottom):
        return self._infogain if len(bottom) < 3 else bottom[2].data.reshape(-1)

    def _check_labels(self, label):
        index = label.astype(np.int64)              # static_cast<int>: toward zero
        if self.has_ignore_label:
            index = index[index != self.ignore_label]
        bad = (index < 0) | (index >= self.num_labels)
        if bad.any():
            raise self.error(f"label {index[bad][0]} out of range [0, {self.num_labels})")

    def forward_cpu(self, bottom, top):
        self._check_labels(bottom[1].data.reshape(-1))
        prob = self._prob.reshape(-1)
        L.softmax_forward(bottom[0].data.reshape(-1), self.outer_num, self.num_labels,
                          self.inner_num, prob)
        loss, count = L.infogain_forward(prob, bottom[1].data.reshape(-1),
                                         self._matrix(bottom), self.outer_num,
                                         self.num_labels, self.inner_num,
                                         self.has_ignore_label, self.ignore_label)
        norm = L.normalizer(self.normalization, self.outer_num, self.inner_num, count)
        top[0].data[...] = self.dtype.type(loss) / self.dtype.type(norm)
        if len(top) >= 2:
            top[1].data[...] = self._prob

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs")
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to infogain inputs")
        if not propagate_down[0]:
            return
        infogain = self._matrix(bottom)
        if len(bottom) >= 3:
            # H is a bottom and may change: sum its rows every time
            L.infogain_row_sums(infogain, self.num_labels, self._row_sums)
        diff = bottom[0].diff.reshape(-1)
        count = L.infogain_backward(self._prob.reshape(-1), bottom[1].data.reshape(-1),
                                    infogain, self._row_sums, self.outer_num,
                                    self.num_labels, self.inner_num, self.has_ignore_label,
                                    self.ignore_label, diff)
        norm = self.dtype.type(L.normalizer(self.normalization, self.outer_num,
                                            self.inner_num, count))
        np.multiply(diff, top[0].diff.reshape(-1)[0] / norm, out=diff)
