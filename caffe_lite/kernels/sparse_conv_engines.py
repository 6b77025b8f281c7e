"""SSL's sparse convolution modes (convolution_param.conv_mode), on kernels/sparse.py.

    LOWERED_CSRMM   im2col, then per group the CSR weight x the lowered input
    LOWERED_CCNMM   im2col, then per group the weight without its all-zero rows and columns,
                    a dense GEMM with the lowered input's rows at the kept columns; outputs of
                    all-zero rows are 0 (+ bias)
    DIRECT_SCONV    no lowering: each output plane accumulates value * shifted input plane over
                    its filter's non-zeros (Park et al., "Holistic SparseCNN")
    DIRECT_DCONV    the same loop over every weight, zeros included: a direct dense convolution

Backward is Caffe's dense one for every mode (LoweredGemmEngine's). It needs nothing from the
forward, and the forward computes the same function as the dense one (to float rounding), so
the gradients are exact and every mode trains; SSL itself trains with LOWERED_GEMM only
and builds its compressed weights once after loading. CSRMM and the direct modes are slower
than LOWERED_GEMM until the weights are sparse, so a net built in TRAIN phase says so in one
line (`train_note`, logged by the Convolution layer). CCNMM falls back to one plain GEMM when
nothing can be dropped, so it trains at dense speed and says nothing.

The compressed weight is cached per layer and rebuilt when the weight changes. Blob has no
version counter, and the weight changes in place (the solver's data -= diff, pycaffe's
`net.params[...][0].data[...] = w`, a gradient check's perturbation), so neither the array's
identity nor its address tells a change. The cache keeps a private copy of the weight it was
built from and compares it bit for bit (NaN and -0.0 included) at each forward: exact, and one
pass over M*K numbers against the product's M*K*P*n multiply-adds. `invalidate()` forces a
rebuild.
"""
import threading

import numpy as np
from numba import njit

from .conv import LoweredGemm, _check
from .conv_engines import LoweredGemmEngine, register_conv_engine
from .gemm import Workspace
from .sparse import ccnmm, compact, csr_from_dense, csr_matmul, direct_conv

_UINT = {4: np.uint32, 8: np.uint64, 2: np.uint16}


@njit(cache=True, nogil=True)
def _same_bits(a, b):
    for i in range(a.size):
        if a[i] != b[i]:
            return False
    return True


class WeightCache:
    """build(weight) for the last weight seen; rebuilt when the weight's bits change."""

    def __init__(self, build):
        self._build = build
        self._copy = None
        self.value = None

    def get(self, w):
        old = self._copy
        if (old is None or old.shape != w.shape or old.dtype != w.dtype
                or not _same_bits(_bits(old), _bits(w))):
            self._copy = np.array(w, order="C")
            self.value = self._build(self._copy)
        return self.value

    def invalidate(self):
        self._copy = self.value = None


def _bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(_UINT[a.itemsize])


# --- lowered modes: another product after im2col --------------------------------------------

class _GroupProduct(LoweredGemm):
    """A product whose per-group compressed weights (compress(w_g)) are cached; `prepare`
    runs once per forward on the calling thread, `matmul` in the batch's worker threads."""

    def __init__(self, compress):
        self._cache = WeightCache(lambda w3: [compress(wg) for wg in w3])
        self._groups = None

    def prepare(self, w3):
        self._groups = self._cache.get(w3)

    def invalidate(self):
        self._cache.invalidate()


class CsrProduct(_GroupProduct):
    def __init__(self):
        super().__init__(csr_from_dense)

    def matmul(self, w3, col3, out3):
        for a, col, out in zip(self._groups, col3, out3):
            csr_matmul(a, col, out)


#: scratch for CCNMM's gathered input and partial output, one per thread and shared by every
#: layer (a net runs one layer at a time), as kernels/gemm.py's workspaces are
_SCRATCH = threading.local()


def _scratch():
    ws = getattr(_SCRATCH, "ws", None)
    if ws is None:
        ws = _SCRATCH.ws = Workspace()
    return ws


class CcnmmProduct(_GroupProduct):
    def __init__(self):
        super().__init__(compact)

    def matmul(self, w3, col3, out3):
        ws = _scratch()
        for a, col, out in zip(self._groups, col3, out3):
            ccnmm(a, col, out, ws.get)


class _LoweredSparseEngine(LoweredGemmEngine):
    product_class = None

    def __init__(self):
        self.product = self.product_class()     # per layer: it caches this layer's weight

    def invalidate(self):
        self.product.invalidate()


_SLOW_TO_TRAIN = ("trains with its sparse forward and Caffe's dense backward (exact "
                  "gradients), slower than LOWERED_GEMM until the weights are sparse; SSL "
                  "trains with LOWERED_GEMM only")


@register_conv_engine("LOWERED_CSRMM")
class LoweredCsrmmEngine(_LoweredSparseEngine):
    product_class = CsrProduct
    train_note = _SLOW_TO_TRAIN


@register_conv_engine("LOWERED_CCNMM")
class LoweredCcnmmEngine(_LoweredSparseEngine):
    product_class = CcnmmProduct


# --- direct modes: the whole forward pass ----------------------------------------------------

class _DirectEngine(LoweredGemmEngine):
    keep_zeros = False
    train_note = _SLOW_TO_TRAIN

    def __init__(self):
        self._cache = WeightCache(
            lambda w: csr_from_dense(w.reshape(w.shape[0], -1), self.keep_zeros))

    def forward(self, x, w, bias, geo, y):
        _check(x, w, geo, y)
        if y.size == 0 or x.size == 0:
            y[...] = 0 if bias is None or y.size == 0 else bias[None, :, None, None]
            return
        direct_conv(x, self._cache.get(w), bias, geo, y)

    def invalidate(self):
        self._cache.invalidate()


@register_conv_engine("DIRECT_SCONV")
class DirectSconvEngine(_DirectEngine):
    pass


@register_conv_engine("DIRECT_DCONV")
class DirectDconvEngine(_DirectEngine):
    keep_zeros = True
