"""`caffe-lite bench sparse`: SSL's sparse convolution modes against dense GEMM, per layer and
for the whole net, on one net in one run (issue #11).

For every Convolution and InnerProduct layer (types exactly those: Deconvolution and SSL's
fused layers are not measured) and every mode, the forward of the layer's real input (taken
from one net forward at that sparsity) is timed: `warmup` calls first (Numba compiles, the
engines build their compressed weights, as a deployed net's first pass does), then `reps`
calls per mode, the modes interleaved in a rotating order so a noisy spell of a shared
machine hits every mode; ms is the median. dense_ms is LOWERED_GEMM's median from the same
loop, speedup = dense_ms / ms, and max_rel_err = max |y_mode - y_dense| / max |y_dense|.

Modes, on a Convolution (weight matrix M x K per group, lowering included in every time):
    LOWERED_GEMM   caffe-lite's dense convolution, the baseline: the conv_mode a net runs by
                   default (kernels/conv_engines.py), which computes Caffe's sums on tiles
                   without lowering where they pay (most 3x3 and 5x5 layers) and by im2col +
                   dense GEMM elsewhere
    IM2COL_GEMM    Caffe's own dense algorithm everywhere: im2col, then one BLAS GEMM per
                   group (kernels/conv.py's conv2d_forward; a 1x1 layer skips im2col, as
                   Caffe's does). The baseline of SSL's sparse-against-dense figure, shown as
                   a reference line so that a speed-up can be read against it too
                   (IM2COL_GEMM ms / mode ms)
    LOWERED_CSRMM  LOWERED_CCNMM  DIRECT_SCONV  DIRECT_DCONV   the conv_mode engines
                   (kernels/sparse_conv_engines.py), a new engine per layer and sparsity
    SCIPY_CSR      the same lowering and batch split as LOWERED_CSRMM with the product
                   scipy.sparse.csr_matrix(W_g) @ col_g: the library a user would reach for,
                   so the line shows our CSR kernel against it (SciPy's product is
                   single-threaded; the batch split gives it caffe-lite's threads as it
                   gives them to ours)
on an InnerProduct (y = x W^T + b, W: N x K), the compressed weights built before warm-up:
    LOWERED_GEMM   x @ W^T: one NumPy GEMM, OpenBLAS on caffe-lite's thread count
    LOWERED_CSRMM  kernels/sparse.py's inner_product_csr
    LOWERED_CCNMM  compact(W) once, then ccnmm on x^T (transposes in and out included)
    SCIPY_CSR      scipy.sparse.csr_matrix(W) @ x^T
DIRECT_SCONV, DIRECT_DCONV and IM2COL_GEMM are convolutions: an InnerProduct has no rows for
them (its dense product is one GEMM in every mode).

TOTAL rows time the whole net.forward() with every Convolution layer's engine set to the
mode's (InnerProduct layers stay dense there, as a conv_mode net runs them); dense_ms is
the same with LOWERED_GEMM; max_rel_err is the largest over the measured layers' tops.
SCIPY_CSR is not an engine a net can run: it has no TOTAL row.

Weights: without the model's own, every measured weight is drawn N(0, 1/K) from the seeded
generator and, for each sparsity, pruned in the pattern (bench/prune.py; sparsity 0 is the
dense draw). With `own_weights` the model's weights run as they are: one point whose
sparsity is each layer's own zero fraction (TOTAL: that of all measured weights), pattern
`model`, and the structure of those zeros is reported.

Threads: everything runs on caffe-lite's thread count (threads.py): the engines split the
batch over it, and the products that are one call (an InnerProduct's dense and CCNMM
GEMMs) get OpenBLAS on that many threads; SciPy's InnerProduct product is single-threaded.
"""
import statistics
import time
from typing import NamedTuple

import numpy as np

from .. import threads
from ..errors import CaffeError
from ..kernels.conv import DENSE as DENSE_PRODUCT, LoweredGemm, conv2d_forward
from ..kernels.conv_engines import LoweredGemmEngine, conv_engine
from ..kernels.gemm import Workspace
from ..kernels.sparse import ccnmm, compact, csr_from_dense, inner_product_csr
from ..kernels.sparse_conv_engines import WeightCache
from ..log import LOG
from .prune import prune, structure

DENSE = "LOWERED_GEMM"
MODES = (DENSE, "LOWERED_CSRMM", "LOWERED_CCNMM", "DIRECT_SCONV", "DIRECT_DCONV", "SCIPY_CSR",
         "IM2COL_GEMM")
CONV_ONLY = ("DIRECT_SCONV", "DIRECT_DCONV", "IM2COL_GEMM")
NO_TOTAL = ("SCIPY_CSR",)
#: the lines that are not conv_mode engines, drawn dashed
REFERENCES = ("SCIPY_CSR", "IM2COL_GEMM")
TOTAL = "TOTAL"
OWN_PATTERN = "model"
CSV_COLUMNS = ("layer", "mode", "pattern", "sparsity", "batch", "ms", "dense_ms", "speedup",
               "max_rel_err")


class Row(NamedTuple):
    """One (layer or TOTAL, mode, sparsity) result: CSV_COLUMNS, then what the table adds."""
    layer: str
    mode: str
    pattern: str
    sparsity: float
    batch: int
    ms: float
    dense_ms: float
    speedup: float
    max_rel_err: float
    point: int              # index of the sparsity point (the table's group)
    zeros: float            # the zero fraction the weights have
    shape: str              # the weight matrix, M x K (/g groups)


# --- SciPy's CSR as a convolution product --------------------------------------------------

class ScipyCsrProduct(LoweredGemm):
    """out_g = scipy.sparse.csr_matrix(w_g) @ col_g per group, the CSR matrices cached as
    the engines cache theirs (rebuilt when the weight's bits change)."""

    def __init__(self):
        import scipy.sparse
        self._cache = WeightCache(lambda w3: [scipy.sparse.csr_matrix(wg) for wg in w3])
        self._groups = None

    def prepare(self, w3):
        self._groups = self._cache.get(w3)

    def matmul(self, w3, col3, out3):
        for a, col, out in zip(self._groups, col3, out3):
            out[...] = a @ col


class ScipyCsrEngine(LoweredGemmEngine):
    """LOWERED_GEMM's lowering with SciPy's CSR product (not a conv_mode: bench only)."""

    def __init__(self):
        self.product = ScipyCsrProduct()


class Im2colGemmEngine(LoweredGemmEngine):
    """Caffe's dense convolution on every layer: im2col and BLAS, never the tiles, the
    depthwise or the direct loops (not a conv_mode: bench only)."""

    def forward(self, x, w, bias, geo, y, epilogue=None):
        conv2d_forward(x, w, bias, geo, y, product=DENSE_PRODUCT, epilogue=epilogue)


def make_engine(mode):
    if mode == "SCIPY_CSR":
        return ScipyCsrEngine()
    if mode == "IM2COL_GEMM":
        return Im2colGemmEngine()
    return conv_engine(mode)


# --- the measured layers ---------------------------------------------------------------------

class Target:
    """A measured layer: its index, and its weight as SSL's matrix (rows = outputs)."""

    def __init__(self, net, index):
        self.index = index
        self.name = net.layer_names[index]
        self.layer = net.layers[index]
        self.bottom = net.bottom_vecs[index][0]
        self.top = net.top_vecs[index][0]
        self.is_conv = self.layer.type == "Convolution"
        self.group = self.layer.geometry.group if self.is_conv else 1
        self.transposed = not self.is_conv and self.layer.transpose

    def matrix(self):
        """The effective weight as a (M, K) array (a copy for a transposed InnerProduct)."""
        w = self.layer.effective_weight()
        return w.T if self.transposed else w.reshape(w.shape[0], -1)

    def set_matrix(self, mat):
        data = self.layer.blobs[0].data
        data[...] = (mat.T if self.transposed else mat).reshape(data.shape)

    def shape(self):
        m, k = self.matrix().shape
        return f"{m}x{k}" + (f"/g{self.group}" if self.group > 1 else "")

    def modes(self, modes):
        return [m for m in modes if self.is_conv or m not in CONV_ONLY]

    def input(self):
        """A copy of the layer's input as its kernels see it (4-d, or (rows, K))."""
        layer = self.layer
        shape = layer._in4 if self.is_conv else (layer.m, layer.k)
        return self.bottom.data.reshape(shape).copy()


def measured_layers(net):
    return [Target(net, i) for i, layer in enumerate(net.layers)
            if layer.type in ("Convolution", "InnerProduct") and layer.blobs]


def conv_runners(target, x, modes):
    """{mode: fn() -> output} for a Convolution on input x."""
    layer = target.layer
    w, bias, geo = layer.effective_weight(), layer.effective_bias(), layer.geometry
    runners = {}
    for mode in modes:
        engine, y = make_engine(mode), np.empty(layer._out4, x.dtype)

        def run(engine=engine, y=y):
            engine.forward(x, w, bias, geo, y)
            return y
        runners[mode] = run
    return runners


def ip_runners(target, x, modes):
    """{mode: fn() -> output} for an InnerProduct on input x (rows, K)."""
    layer = target.layer
    w, bias = layer.effective_weight(), layer.effective_bias()
    mat = np.ascontiguousarray(target.matrix())
    rows, n = x.shape[0], mat.shape[0]

    def biased(yt):
        y = np.ascontiguousarray(yt.T)
        if bias is not None:
            y += bias
        return y

    runners = {}
    for mode in modes:
        if mode == DENSE:
            y = np.empty((rows, n), x.dtype)

            def run(y=y):
                np.matmul(x, w if target.transposed else w.T, out=y)
                if bias is not None:
                    y += bias
                return y
        elif mode == "LOWERED_CSRMM":
            csr = csr_from_dense(mat)

            def run(csr=csr):
                return inner_product_csr(x, csr, bias)
        elif mode == "LOWERED_CCNMM":
            packed, ws, yt = compact(mat), Workspace(), np.empty((n, rows), x.dtype)

            def run(packed=packed, ws=ws, yt=yt):
                ccnmm(packed, np.ascontiguousarray(x.T), yt, ws.get)
                return biased(yt)
        elif mode == "SCIPY_CSR":
            import scipy.sparse
            a = scipy.sparse.csr_matrix(mat)

            def run(a=a):
                return biased(a @ x.T)
        else:
            raise ValueError(f"mode {mode} does not apply to an InnerProduct")
        runners[mode] = run
    return runners


# --- timing ------------------------------------------------------------------------------------

def time_modes(runners, reps, warmup, clock=time.perf_counter):
    """({mode: median seconds}, {mode: last output}) of `reps` interleaved calls per mode
    after `warmup` calls of each; the order rotates by one mode per repetition."""
    order = list(runners)
    for _ in range(warmup):
        for mode in order:
            runners[mode]()
    times = {mode: [] for mode in order}
    outputs = {}
    for r in range(reps):
        k = r % len(order)
        for mode in order[k:] + order[:k]:
            start = clock()
            outputs[mode] = runners[mode]()
            times[mode].append(clock() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}, outputs


def max_rel_err(y, ref):
    """max |y - ref| relative to max |ref| (0 when both are 0, inf when only ref is)."""
    if ref.size == 0:
        return 0.0
    diff = float(np.max(np.abs(np.asarray(y, np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / scale


# --- the benchmark ---------------------------------------------------------------------------

class Result(NamedTuple):
    rows: list              # [Row]
    structures: list        # [(layer, shape, prune.Structure)] of the model's own zeros
    batch: int


def bench_sparse(net, sparsities, pattern, modes, reps=5, warmup=2, seed=0, own_weights=False):
    """Result of the benchmark (module docstring) on `net`, whose inputs are already filled.
    `sparsities` and `pattern` are ignored with `own_weights`. The net keeps the pruned
    weights of the last point; its engines are put back."""
    targets = measured_layers(net)
    if not targets:
        raise CaffeError("the net has no Convolution or InnerProduct layer")
    convs = [t for t in targets if t.is_conv]
    saved = [t.layer.engine for t in convs]
    total_modes = [m for m in dict.fromkeys((DENSE,) + tuple(modes)) if m not in NO_TOTAL]
    engines = {m: [make_engine(m) for _ in convs] for m in total_modes}
    structures = []
    if own_weights:
        points = [None]
        structures = [(t.name, t.shape(), structure(t.matrix(), t.group)) for t in targets]
    else:
        points = list(sparsities)
        base = {t.index: _random_weight(t, seed) for t in targets}
    rows = []
    batch = int(targets[0].bottom.shape[0])
    try:
        with threads.blas_threads(threads.get_num_threads()):
            for point, s in enumerate(points):
                if s is not None:
                    LOG.info("bench sparse: sparsity %g, pattern %s", s, pattern)
                    for t in targets:
                        t.set_matrix(prune(base[t.index], s, pattern,
                                           np.random.default_rng([seed, t.index, _key(s)]),
                                           t.group))
                rows += _point_rows(net, targets, convs, engines, modes, reps, warmup,
                                    point, s, pattern, batch)
    finally:
        for t, engine in zip(convs, saved):
            t.layer.engine = engine
    return Result(rows, structures, batch)


def _key(s):
    return int(round(s * 1_000_000))


def _random_weight(target, seed):
    m, k = target.matrix().shape
    rng = np.random.default_rng([seed, target.index])
    return (rng.standard_normal((m, k)) / np.sqrt(max(k, 1))).astype(np.float32)


def _install(convs, engines):
    for t, engine in zip(convs, engines):
        t.layer.engine = engine


def _point_rows(net, targets, convs, engines, modes, reps, warmup, point, s, pattern, batch):
    """The rows of one sparsity point (s None: the model's own zeros)."""
    _install(convs, engines[DENSE])
    inputs = {}
    for i in range(len(net.layers)):
        for t in targets:
            if t.index == i:
                inputs[i] = t.input()
        net.forward_from_to(i, i)
    pattern_name = OWN_PATTERN if s is None else pattern
    rows, zeros, sizes = [], 0, 0
    for t in targets:
        x = inputs[t.index]
        wanted = t.modes(modes)
        runs = list(dict.fromkeys([DENSE] + wanted))
        runners = (conv_runners if t.is_conv else ip_runners)(t, x, runs)
        seconds, outputs = time_modes(runners, reps, warmup)
        mat = t.matrix()
        frac = structure(mat, t.group).elements
        zeros, sizes = zeros + frac * mat.size, sizes + mat.size
        for mode in wanted:
            rows.append(_row(t.name, mode, pattern_name, frac if s is None else s, batch,
                             seconds[mode], seconds[DENSE],
                             max_rel_err(outputs[mode], outputs[DENSE]), point, frac,
                             t.shape()))
    total_frac = zeros / sizes if sizes else 0.0
    rows += _total_rows(net, targets, convs, engines, modes, reps, warmup, point,
                        total_frac if s is None else s, pattern_name, batch, total_frac)
    return rows


def _total_rows(net, targets, convs, engines, modes, reps, warmup, point, s, pattern, batch,
                frac):
    def forward(mode):
        def run():
            _install(convs, engines[mode])
            net.forward()
        return run

    runners = {mode: forward(mode) for mode in engines}
    seconds, _ = time_modes(runners, reps, warmup)
    tops = {}
    for mode in engines:
        runners[mode]()
        tops[mode] = [t.top.data.copy() for t in targets]
    _install(convs, engines[DENSE])
    rows = []
    for mode in modes:
        if mode in NO_TOTAL:
            continue
        err = max(max_rel_err(y, ref) for y, ref in zip(tops[mode], tops[DENSE]))
        rows.append(_row(TOTAL, mode, pattern, s, batch, seconds[mode], seconds[DENSE], err,
                         point, frac, ""))
    return rows


def _row(layer, mode, pattern, s, batch, seconds, dense_seconds, err, point, zeros, shape):
    ms, dense_ms = seconds * 1e3, dense_seconds * 1e3
    speedup = dense_ms / ms if ms > 0 else float("inf")
    return Row(layer, mode, pattern, float(s), batch, ms, dense_ms, speedup, err, point,
               float(zeros), shape)
