"""SSL's sparse convolution modes (convolution_param.conv_mode), on kernels/sparse.py.

    LOWERED_CSRMM   im2col, then per group the CSR weight x the lowered input
    LOWERED_CCNMM   per group, the weight without its all-zero rows and columns times the
                    lowering of only the kept columns' rows (one dense GEMM); outputs of
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
identity nor its address tells a change. The direct modes check the weight against their CSR
inside their kernels (kernels/direct_conv.py); for the lowered modes, `WeightCache` keeps a
private copy of the weight it was built from and compares it bit for bit (NaN and -0.0
included) at each forward: exact, and one pass over M*K numbers against the product's
M*K*P*n multiply-adds. LOWERED_CCNMM on tiles checks the weight against its compacted form
instead (`CompactCache`: the kept entries bit for bit, the non-zero count per row), which
keeps no copy and reads less as the weight gets sparser (CaffeNet conv3's check 0.24 ->
0.17 ms at 90% column sparsity, 0.24 -> 0.26 at 70%). `invalidate()` forces a rebuild.
"""
import numpy as np
from numba import uint64 as U

from .. import threads
from . import blocked_conv
from .conv import LoweredGemm, _check
from .conv_engines import LoweredGemmEngine, register_conv_engine
from .direct_conv import DirectConv
from .im2col import im2col_rows_bm
from .jit import kernel
from .sparse import compact, csr_from_dense, csr_matmul

_UINT = {4: np.uint32, 8: np.uint64, 2: np.uint16}


#: elements per block of `_same_bits`: the block's loop has no exit, so it vectorizes (an
#: early-exit loop over every element ran 5x slower, 0.6 ms on CaffeNet conv3's weight)
_BLOCK = 4096


@kernel(nogil=True)
def _same_bits(a, b):
    n = a.size
    blocks = n // _BLOCK
    for blk in range(blocks):
        s = U(blk * _BLOCK)
        diff = a[0] ^ a[0]
        for i in range(_BLOCK):
            diff |= a[s + U(i)] ^ b[s + U(i)]
        if diff != 0:
            return False
    for i in range(blocks * _BLOCK, n):
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


class CompactCache:
    """build(weight, kept) for the last weight seen, where kept is, per group of the
    weight's (g, M/g, K) view, compact()'s (rows, columns, compacted weight) with every
    all-zero row and column dropped; rebuilt when the weight no longer has that form.

    The check reads the weight once and the compacted values once (_same_as_compact), not
    the weight and a private copy of it (module docstring for its times). Exact: the kept
    entries bit for bit, and per row as many non-zeros as the compacted row has, so none
    in a dropped row or column (NaN counts as non-zero, -0.0 as zero, as `compact` drops
    it: a -0.0 weight adds the same zero either way)."""

    def __init__(self, build, group):
        self._build = build
        self.group = group
        self._form = None
        self.value = None

    def get(self, w):
        form = self._form
        w2 = np.ascontiguousarray(w).reshape(w.shape[0], -1)
        if (form is None or form.shape != w2.shape or form.dtype != w2.dtype
                or not _still_compact(w2, form)):
            w3 = w2.reshape(self.group, -1, w2.shape[1])
            kept = [compact(wg, gather_macs=0, column_gather_macs=0) for wg in w3]
            self._form = _CompactForm(kept, w2.shape, w2.dtype)
            self.value = self._build(w, [(a.rows, a.cols, a.w) for a in kept])
        return self.value

    def invalidate(self):
        self._form = self.value = None


class _CompactForm:
    """What _same_as_compact reads of a weight's compacted groups: per row of the (M, K)
    weight its group's kept columns (cols[col_start[g]:col_start[g + 1]]), where its
    compacted values start in `kept_bits` (-1: a dropped row) and its non-zero count."""

    def __init__(self, kept, shape, dtype):
        self.shape, self.dtype = shape, dtype
        uint = _UINT[np.dtype(dtype).itemsize]
        mg = shape[0] // len(kept)
        col_start = np.zeros(len(kept) + 1, np.int64)
        np.cumsum([len(a.cols) for a in kept], out=col_start[1:])
        row_at = np.full(shape[0], -1, np.int64)
        nonzeros = np.zeros(shape[0], np.int64)
        base = 0
        for g, a in enumerate(kept):
            rows = g * mg + a.rows
            row_at[rows] = base + np.arange(len(a.rows)) * len(a.cols)
            nonzeros[rows] = np.count_nonzero(a.w, axis=1)
            base += a.w.size
        cols = np.concatenate([a.cols for a in kept]).astype(np.int64)
        kept_bits = np.concatenate([np.ascontiguousarray(a.w, dtype).reshape(-1).view(uint)
                                    for a in kept])
        self.arrays = (mg, cols, col_start, row_at, nonzeros, kept_bits)


#: fewest weight elements for the check to run on every thread: CaffeNet conv3's weight
#: (885 K) took 0.12-0.18 ms on one core, a part handed to the pool costs 5-10 us
CHECK_PARALLEL_MIN = 1 << 18


def _still_compact(w2, form):
    """_same_as_compact over the rows of w2 (M, K), split over the threads when it is big."""
    bits = w2.view(_UINT[w2.itemsize])
    rows = w2.shape[0]
    parts = min(threads.get_num_threads(), rows) if w2.size >= CHECK_PARALLEL_MIN else 1
    bounds = [rows * i // parts for i in range(parts + 1)]
    return all(threads.run_parallel(
        _same_as_compact, [(w2, bits, *form.arrays, lo, hi)
                           for lo, hi in zip(bounds[:-1], bounds[1:])]))


@kernel(nogil=True)
def _same_as_compact(wf, wb, mg, cols, col_start, row_at, nonzeros, kept_bits, lo, hi):
    """Whether rows [lo, hi) of the weight (M, K), as values wf and bits wb, still have the
    compacted form (CompactCache). The count's loop has no exit, so it vectorizes."""
    k = wf.shape[1]
    flat = wf.reshape(-1)
    bits = wb.reshape(-1)
    for m in range(lo, hi):
        row = U(m * k)
        count = 0
        for j in range(k):
            count += np.int32(flat[row + U(j)] != 0)
        if count != nonzeros[m]:
            return False
        at = row_at[m]
        if at < 0:
            continue
        g = m // mg
        c0 = col_start[g]
        diff = bits[0] ^ bits[0]
        for j in range(col_start[g + 1] - c0):
            diff |= bits[row + U(cols[c0 + j])] ^ kept_bits[at + j]
        if diff != 0:
            return False
    return True


# --- lowered modes: another product after im2col --------------------------------------------

class _CachedProduct(LoweredGemm):
    """A product whose compressed weight (compress(w3), w3 (g, M/g, K)) is cached; `prepare`
    runs once per forward on the calling thread, `matmul` / `forward` in the batch's worker
    threads."""

    def __init__(self, compress):
        self._cache = WeightCache(compress)
        self._groups = None

    def prepare(self, w3):
        self._groups = self._cache.get(w3)

    def invalidate(self):
        self._cache.invalidate()


class CsrProduct(_CachedProduct):
    def __init__(self):
        super().__init__(lambda w3: [csr_from_dense(wg) for wg in w3])

    def matmul(self, w3, col3, out3):
        for a, col, out in zip(self._groups, col3, out3):
            csr_matmul(a, col, out)


def _ccnmm_groups(w3):
    """Per group: the compacted weight (every all-zero column dropped, since the lowering
    then skips them) and the lowered rows of its kept columns."""
    k = w3.shape[2]
    groups = []
    for g, wg in enumerate(w3):
        a = compact(wg, column_gather_macs=0)
        groups.append((a, (a.cols + g * k).astype(np.int64)))
    return groups


class CcnmmProduct(_CachedProduct):
    """Per group, out = W[rows][:, cols] @ col[cols] into out's kept rows (the others 0),
    where col[cols] lowers only the kept columns' rows (im2col_rows_bm): an all-zero
    column costs neither its lowering nor its multiply-adds."""

    def __init__(self):
        super().__init__(_ccnmm_groups)
        self._given = None

    def take(self, groups):
        """The next `prepare` uses `groups` (_ccnmm_groups of the weight it gets, which the
        caller has just checked) instead of checking the weight again."""
        self._given = groups

    def prepare(self, w3):
        if self._given is None:
            super().prepare(w3)
        else:
            self._groups, self._given = self._given, None

    def lowered_rows(self, rows):
        # one group's kept rows at a time: chunks of the batch grow as the columns go
        return max([1] + [len(lowered) for _, lowered in self._groups])

    def forward(self, in_t, w3, geo, out_t, ws):
        g, mg, k = w3.shape
        oh, ow, n = out_t.shape[1:]
        out3 = out_t.reshape(g, mg, -1)
        for (a, lowered_rows), out in zip(self._groups, out3):
            if len(a.rows) == 0:
                out[...] = 0
                continue
            col = ws.get("ccnmm_col", (len(lowered_rows), oh * ow * n), in_t.dtype)
            if geo.is_1x1:
                np.take(in_t.reshape(-1, oh * ow * n), lowered_rows, axis=0, out=col)
            else:
                im2col_rows_bm(in_t, lowered_rows, *geo.im2col_args, oh, ow, col)
            if len(a.rows) == mg:
                np.matmul(a.w, col, out=out)
                continue
            part = ws.get("ccnmm_out", (len(a.rows), out.shape[1]), out.dtype)
            np.matmul(a.w, col, out=part)
            out[...] = 0
            out[a.rows] = part


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
    """Where the blocked convolution applies (AVX-512, kernels/blocked_conv.py; a strided
    layer on its stride's phases), the compacted weight runs on its tiles instead of a
    GEMM after lowering: only the kept rows are computed, from the kept taps, and nothing
    is lowered. Elsewhere, CcnmmProduct."""
    product_class = CcnmmProduct

    def __init__(self):
        super().__init__()
        self._tiles = None

    def _pack(self, w, kept):
        """(the tiles' groups, the lowered product's groups) of one weight, so that a pass
        that falls back to the lowered product checks the weight once, not twice."""
        group = len(kept)
        w3 = np.ascontiguousarray(w).reshape(group, w.shape[0] // group, -1)
        return blocked_conv.pack_groups(w, group, kept), _ccnmm_groups(w3)

    def forward(self, x, w, bias, geo, y, epilogue=None):
        if not blocked_conv.may_run(x) or y.size == 0:
            return super().forward(x, w, bias, geo, y, epilogue)
        if self._tiles is None or self._tiles.group != geo.group:
            # every all-zero row and column dropped: dropping costs the tiles nothing
            self._tiles = CompactCache(self._pack, geo.group)
        groups, lowered = self._tiles.get(w)
        taps = max(len(gr.taps) for gr in groups)
        outputs = sum(len(gr.channels) for gr in groups)
        if not blocked_conv.applies(x, geo, max(outputs, 1), taps=taps):
            self.product.take(lowered)
            try:
                return super().forward(x, w, bias, geo, y, epilogue)
            finally:
                self.product.take(None)
        blocked_conv.blocked_conv_forward(x, w, bias, geo, y, groups=groups, epilogue=epilogue)

    def invalidate(self):
        super().invalidate()
        if self._tiles is not None:
            self._tiles.invalidate()


# --- direct modes: the whole forward pass ----------------------------------------------------

class _DirectEngine(LoweredGemmEngine):
    keep_zeros = False
    train_note = _SLOW_TO_TRAIN

    def __init__(self):
        self._conv = DirectConv(self.keep_zeros)    # per layer: its weight's CSR, buffers

    def forward(self, x, w, bias, geo, y, epilogue=None):
        _check(x, w, geo, y)
        if y.size == 0 or x.size == 0:
            y[...] = 0 if bias is None or y.size == 0 else bias[None, :, None, None]
        else:
            self._conv.forward(x, w, bias, geo, y)
        if epilogue is not None:
            epilogue.apply(y)

    def invalidate(self):
        self._conv.invalidate()


@register_conv_engine("DIRECT_SCONV")
class DirectSconvEngine(_DirectEngine):
    pass


@register_conv_engine("DIRECT_DCONV")
class DirectDconvEngine(_DirectEngine):
    keep_zeros = True
