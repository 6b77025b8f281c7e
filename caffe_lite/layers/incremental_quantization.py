"""Incremental Network Quantization on a Convolution or InnerProduct (no layer type of its
own): NNMC's INQConvolution and INQInnerProduct are this mixin over ConvolutionLayer or
InnerProductLayer with their *_param field; the rule is compress/inq.py.

Blobs [W, b, M_W, M_b] (mask_blobs.py): mask 1 = still floating point and trainable,
0 = quantized and frozen (the opposite of DNS's meaning). `portion: prev portion: cur` gives
the accumulated quantized fractions before and after this step.

  first TRAIN forward at iteration 0: W, then b, each gets the next portion quantized to
                  {0, +-2^n2 .. +-2^n1} (n2 = n1 - num_quantum_values + 1) in place, its
                  mask cleared there; a run resumed at a later iteration does not quantize
                  again (its snapshot holds the result)
  forward / backward: the weights as they are (quantized entries are exact powers of two);
                  the gradient is dense, and the solver hook (compress/dns_inq_training.py)
                  zeroes the update and the momentum of every frozen entry, weight decay
                  included
"""
from ..common import TRAIN
from ..compress import inq
from ..log import LOG
from .mask_blobs import IterationAware, add_masks, parameter_masks


class IncrementalQuantizationMixin(IterationAware):
    #: the LayerParameter field with portion, num_quantum_values and the mask fillers
    quantization_field = None

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = getattr(self.param, self.quantization_field)
        portion = list(p.portion)
        if len(portion) != 2:
            raise self.error(f"{self.quantization_field}: give portion twice, the quantized "
                             f"fractions before and after this step (e.g. portion: 0.3 "
                             f"portion: 0.6); got {len(portion)} value(s)")
        if not 0 <= portion[0] <= portion[1] <= 1:
            raise self.error(f"{self.quantization_field}: need 0 <= portion[0] <= "
                             f"portion[1] <= 1, got {portion[0]:g} and {portion[1]:g}")
        if not 1 <= p.num_quantum_values <= 64:
            raise self.error(f"{self.quantization_field}: num_quantum_values must be in "
                             f"1..64, got {p.num_quantum_values}")
        self.portion = portion
        self.num_quantum_values = p.num_quantum_values
        add_masks(self, p.weight_mask_filler, p.bias_mask_filler)
        self.quantized = False

    def forward_cpu(self, bottom, top):
        if self.phase == TRAIN and self.iteration == 0 and not self.quantized:
            self.quantize()
        super().forward_cpu(bottom, top)

    def quantize(self):
        for what, (w, mask) in zip(("weights", "bias"), parameter_masks(self)):
            n1, n2, done = inq.nnmc_quantize(w, mask, *self.portion, self.num_quantum_values)
            frozen = w.size - int((mask == 1).sum())
            if n1 is None:
                LOG.info("%s (%s): %s: nothing left to quantize", self.name, self.type, what)
                continue
            LOG.info("%s (%s): %s: portion %g%% -> %g%%, %d quantized now, %d of %d in "
                     "total, exponents %d..%d", self.name, self.type, what,
                     100 * self.portion[0], 100 * self.portion[1], done, frozen, w.size,
                     n2, n1)
        self.quantized = True

    def frozen_masks(self):
        """{blob index: mask array} for the solver hook: where the mask is 0 nothing moves."""
        return {i: mask for i, (_, mask) in enumerate(parameter_masks(self))}
