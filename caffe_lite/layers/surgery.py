"""Dynamic Network Surgery on a Convolution or InnerProduct (no layer type of its own).

The four DNS layer types (CConvolution, CInnerProduct: official DNS; DNSConvolution,
DNSInnerProduct: NNMC) are this mixin over ConvolutionLayer or InnerProductLayer with their
*_param field; the rules are compress/dns.py. Blobs [W, b, T_W, T_b] (mask_blobs.py).

  TRAIN forward   the statistics (mu, std of |w| over the non-zero kept weights and biases)
                  once, on the first TRAIN forward of the run; then one uniform draw, and
                  with probability (1 + gamma * iter)^(-power), while iter < iter_stop, both
                  masks updated around T = max(mu + c_rate * std, 0) with hysteresis
                  alpha_low / alpha_high (official DNS: 0.9 / 1.1, NNMC: 0.95 / 1.05)
  forward         with W * T_W and b * T_b, in TRAIN and TEST
  backward        the bottom gradient through W * T_W; the weight and bias gradients dense,
                  so that a cut weight keeps learning and can be spliced back

The statistics are layer state: saved in a snapshot's side file and restored on -snapshot
resume (the official code recomputes nothing on resume and runs with mu = std = 0).
"""
import numpy as np

from .. import common
from ..common import TRAIN
from ..compress import dns
from ..log import LOG
from .mask_blobs import IterationAware, add_masks, parameter_masks


class SurgeryMixin(IterationAware):
    #: the LayerParameter field with gamma, power, c_rate, iter_stop, alpha_*, fillers
    surgery_field = None

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.surgery = getattr(self.param, self.surgery_field)
        p = self.surgery
        if p.power < 0 or p.gamma < 0:
            raise self.error(f"{self.surgery_field}: gamma and power must be >= 0 "
                             f"(gamma {p.gamma:g}, power {p.power:g})")
        if not 0 <= p.alpha_low <= p.alpha_high:
            raise self.error(f"{self.surgery_field}: need 0 <= alpha_low <= alpha_high "
                             f"(alpha_low {p.alpha_low:g}, alpha_high {p.alpha_high:g})")
        add_masks(self, p.weight_mask_filler, p.bias_mask_filler)
        self.statistics = None
        self._masked = {}

    # --- the masked parameters forward and backward use --------------------------------------
    def _masked_param(self, index, value):
        mask = self.blobs[self.optional_blobs_from + index].data
        out = self._masked.get(index)
        if out is None or out.shape != value.shape:
            out = self._masked[index] = np.empty_like(value)
        np.multiply(value, mask, out=out)
        return out

    def effective_weight(self):
        return self._masked_param(0, super().effective_weight())

    def effective_bias(self):
        bias = super().effective_bias()
        return None if bias is None else self._masked_param(1, bias)

    # --- surgery ----------------------------------------------------------------------------
    def forward_cpu(self, bottom, top):
        if self.phase == TRAIN:
            self.surgery_step()
        super().forward_cpu(bottom, top)

    def surgery_step(self):
        p = self.surgery
        pairs = parameter_masks(self)
        if self.statistics is None:
            self.statistics = dns.statistics(pairs)
            LOG.info("%s (%s): mu = %g, std = %g", self.name, self.type, *self.statistics)
        draw = common.rng().random()
        if dns.should_update(p.gamma, p.power, p.iter_stop, self.iteration, draw):
            t = dns.threshold(*self.statistics, p.c_rate)
            for w, mask in pairs:
                dns.update_mask(w, mask, t, p.alpha_low, p.alpha_high)

    # --- resume -------------------------------------------------------------------------------
    def get_state(self):
        return {"statistics": None if self.statistics is None else list(self.statistics)}

    def set_state(self, state):
        stats = state["statistics"]
        if stats is None:
            self.statistics = None
            return
        if (not isinstance(stats, list) or len(stats) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and np.isfinite(v) and v >= 0 for v in stats)):
            raise ValueError(f"statistics must be [mu, std], two finite numbers >= 0; "
                             f"got {stats!r}")
        self.statistics = (float(stats[0]), float(stats[1]))
