"""ContrastiveLoss (Hadsell et al. 2006) over pairs (a_n, b_n) with similarity labels y_n.

E = 1/(2N) sum_n [ y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2 ], d_n = ||a_n - b_n||;
legacy_version uses max(margin - d_n^2, 0) instead. contrastive_loss_param { margin: 1,
legacy_version: false }. Bottoms: a (N x C x 1 x 1), b (same), y (N values, int(y) != 0 means
similar). Both a and b get gradients (signs + and -); none to y.
"""
import numpy as np

from ..kernels import losses as L
from . import register
from .base import Layer


@register("ContrastiveLoss")
class ContrastiveLossLayer(Layer):
    exact_num_bottom = 3
    exact_num_top = 1
    is_loss = True

    def layer_setup(self, bottom, top):
        p = self.param.contrastive_loss_param
        self.margin = self.dtype.type(p.margin)
        self.legacy = bool(p.legacy_version)
        self._diff = None

    def reshape(self, bottom, top):
        a, b, y = bottom
        if a.shape[:1] != b.shape[:1] or a.shape[:1] != y.shape[:1]:
            raise self.error(f"the bottoms should have the same first dimension "
                             f"({a.shape}, {b.shape}, {y.shape})")
        if a.num_axes < 2 or a.shape != b.shape or a.count_range(2) != 1:
            raise self.error(f"the pair bottoms must be N x C (x 1 x 1) of one shape, got "
                             f"{a.shape} and {b.shape}")
        if y.count != y.shape[0]:
            raise self.error(f"the label bottom must hold one value per pair, got {y.shape}")
        top[0].reshape(())
        self.num, self.channels = a.shape[0], a.shape[1]
        if self._diff is None or self._diff.shape != a.shape:
            self._diff = np.zeros(a.shape, self.dtype)
            self._dist_sq = np.zeros(self.num, self.dtype)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def forward_cpu(self, bottom, top):
        np.subtract(bottom[0].data, bottom[1].data, out=self._diff)
        loss = L.contrastive_forward(self._diff.reshape(-1), bottom[2].data.reshape(-1),
                                     self.num, self.channels, self.margin, self.legacy,
                                     self._dist_sq)
        dt = self.dtype.type
        top[0].data[...] = dt(loss) / dt(self.num) / dt(2)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the similarity labels")
        weight = top[0].diff.reshape(-1)[0]
        dt = self.dtype.type
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = dt(sign) * weight / dt(self.num)
                L.contrastive_backward(self._diff.reshape(-1), self._dist_sq,
                                       bottom[2].data.reshape(-1), self.num, self.channels,
                                       alpha, self.margin, self.legacy,
                                       bottom[i].diff.reshape(-1))
