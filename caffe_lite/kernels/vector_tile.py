"""A register-blocked multiply-add tile, written in LLVM IR: the inner kernel of
kernels/blocked_conv.py.

    for k in [k0, k1):                     taps
        for i < ROWS, j < VECTORS:         acc[i][j]: one vector of LANES floats each
            acc[i][j] += w[woff + i*ldw + k] * x[xoff + pix[t + j] + taps[k] : ... + LANES]
    y[yoff + i*ldy + j*LANES : ... + LANES] = acc[i][j]      (accumulate: y += acc)

The weight is read where it lies, a (rows, ldw) matrix, row i from woff + i*ldw (rows at
and past `nrows` read row nrows - 1: a last block of fewer than ROWS filters computes
sums that nobody unpacks). No packed copy: a packed weight cost more than the tiles on
a batch of one (JacintoNet11's 512 x 2304 weight: 1.3 ms to pack, 0.8 ms of tiles).

Each step loads VECTORS input vectors and broadcasts ROWS weights for ROWS*VECTORS FMAs, so
the tile is bound by the FMA units, not by loads. Numba's own loops cannot express it: LLVM
keeps a local accumulator array in memory (a direct convolution written that way ran at 38
GFLOP/s on one core, docs/benchmarks.md); here the accumulators are SSA values carried by
phi nodes, so they live in registers. 8 rows x 3 vectors of 16 floats take 24 of AVX-512's
32 vector registers, leaving the three loads and a broadcast; on the Intel Xeon of
docs/benchmarks.md the tile runs at 170-190 GFLOP/s on one core (large GEMMs: 205).

The sums run over k in order, one FMA per tap, as the dense GEMM's inner loop does.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: floats per vector: one AVX-512 register
LANES = 16
#: output channels and vectors per tile (module docstring)
ROWS, VECTORS = 8, 3


class _IR:
    """What both tiles' code generators use: the arrays' data pointers, constants, vector
    pointers and the vector FMA."""

    def __init__(self, context, builder, sig, args):
        self.builder = builder
        self._arrays = (context, sig, args)
        self.i64, self.i32 = ir.IntType(64), ir.IntType(32)
        self.vec = ir.VectorType(ir.FloatType(), LANES)
        self.fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.vec, [self.vec] * 3), f"llvm.fma.v{LANES}f32")

    def data(self, i):
        context, sig, args = self._arrays
        return context.make_array(sig.args[i])(context, self.builder, args[i]).data

    def const(self, value):
        return ir.Constant(self.i64, value)

    def vector_at(self, base, offset):
        """Pointer to the vector at base[offset] (loads and stores on it set align 4)."""
        return self.builder.bitcast(self.builder.gep(base, [offset]), self.vec.as_pointer())

    def load(self, pointer):
        value = self.builder.load(pointer)
        value.align = 4
        return value

    def open_loop(self, name, first, starts):
        """Enter a loop over an index from `first`, carrying the vectors `starts`: returns
        the index and the carried vectors (phi nodes) inside the loop."""
        builder = self.builder
        self._entry = builder.block
        self._loop = builder.append_basic_block(f"{name}_loop")
        self._done = builder.append_basic_block(f"{name}_done")
        builder.branch(self._loop)
        builder.position_at_end(self._loop)
        index = builder.phi(self.i64)
        index.add_incoming(first, self._entry)
        carried = []
        for v in starts:
            phi = builder.phi(self.vec)
            phi.add_incoming(v, self._entry)
            carried.append(phi)
        return index, carried

    def close_loop(self, index, carried, new, end):
        """Loop again with `new` for the carried vectors while index + 1 < end; after it,
        the builder is past the loop."""
        builder = self.builder
        following = builder.add(index, self.const(1))
        index.add_incoming(following, self._loop)
        for phi, value in zip(carried, new):
            phi.add_incoming(value, self._loop)
        builder.cbranch(builder.icmp_signed("<", following, end), self._loop, self._done)
        builder.position_at_end(self._done)


def _tile_codegen(rows, vectors, accumulate, indexed):
    """The code of a tile (module docstring). With `indexed`, step k broadcasts the rows at
    w[woff + wpos[k]] instead of w[woff + k*rows], and its vectors are at x[xoff + pix[t + j]
    + k*LANES] (no taps): the intrinsic takes wpos in the place of taps."""
    def codegen(context, builder, sig, args):
        c = _IR(context, builder, sig, args)
        names = (("x", "xoff", "pix", "t", "w", "woff", "wpos") if indexed
                 else ("x", "xoff", "pix", "t", "w", "woff", "taps"))
        at = dict(zip(names + ("k0", "k1", "y", "yoff", "ldy", "ldw", "nrows"),
                      range(len(args))))
        xd, pd, wd, yd = (c.data(at[name]) for name in ("x", "pix", "w", "y"))
        xoff, t, woff, k0, k1, yoff, ldy = (args[at[name]] for name in (
            "xoff", "t", "woff", "k0", "k1", "yoff", "ldy"))
        vec, fma, const, vector_at = c.vec, c.fma, c.const, c.vector_at
        xbase = builder.gep(xd, [xoff])
        bases = [builder.gep(xbase, [builder.load(builder.gep(pd, [builder.add(t, const(j))]))])
                 for j in range(vectors)]
        ybase = builder.gep(yd, [yoff])
        outs = [[vector_at(builder.gep(ybase, [builder.mul(ldy, const(i))]), const(j * LANES))
                 for j in range(vectors)] for i in range(rows)]
        start = []
        for i in range(rows):
            for j in range(vectors):
                if accumulate:
                    v = c.load(outs[i][j])
                else:
                    v = ir.Constant(vec, [0.0] * LANES)
                start.append(v)
        if not indexed:
            # row i of the weight at w[woff + i*ldw]; rows past nrows read the last one
            # (their sums are computed and never unpacked)
            ldw, nrows = args[at["ldw"]], args[at["nrows"]]
            last = builder.sub(nrows, const(1))
            row_at = [builder.mul(builder.select(builder.icmp_signed("<", const(i), nrows),
                                                 const(i), last), ldw)
                      for i in range(rows)]
        k, acc = c.open_loop("tile", k0, start)
        if indexed:
            offset = builder.mul(k, const(LANES))
        else:
            offset = builder.load(builder.gep(c.data(at["taps"]), [k]))
        xs = [c.load(vector_at(bases[j], offset)) for j in range(vectors)]
        if indexed:
            step = builder.load(builder.gep(c.data(at["wpos"]), [k]))
        else:
            step = k
        wk = builder.gep(wd, [builder.add(woff, step)])
        undef = ir.Constant(vec, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        new = [None] * (rows * vectors)
        for i in range(rows):
            scalar = builder.load(builder.gep(wk, [const(i) if indexed else row_at[i]]))
            wv = builder.shuffle_vector(
                builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0)),
                undef, splat)
            for j in range(vectors):
                new[i * vectors + j] = builder.call(fma, [wv, xs[j], acc[i * vectors + j]])
        c.close_loop(k, acc, new, k1)
        for i in range(rows):
            for j in range(vectors):
                store = builder.store(new[i * vectors + j], outs[i][j])
                store.align = 4
        return context.get_dummy_value()
    return codegen


def _tile(rows, vectors, accumulate):
    """The tile intrinsic for `rows` x `vectors` accumulators; with `accumulate` they
    start from y (a later block of taps) instead of zero."""

    @intrinsic
    def tile(typingctx, x, xoff, pix, t, w, woff, taps, k0, k1, y, yoff, ldy, ldw, nrows):
        sig = types.void(x, xoff, pix, t, w, woff, taps, k0, k1, y, yoff, ldy, ldw, nrows)
        return sig, _tile_codegen(rows, vectors, accumulate, indexed=False)

    return tile


def _indexed_tile(rows, vectors, accumulate):
    """_tile whose step k broadcasts the `rows` floats at w[woff + wpos[k]] and loads its
    vectors LANES floats further on: the weight gradient's operands, a window start per
    output position and dy's vectors position after position (kernels/nhwc_weight_grad.py)."""

    @intrinsic
    def tile(typingctx, x, xoff, pix, t, w, woff, wpos, k0, k1, y, yoff, ldy):
        sig = types.void(x, xoff, pix, t, w, woff, wpos, k0, k1, y, yoff, ldy)
        return sig, _tile_codegen(rows, vectors, accumulate, indexed=True)

    return tile


def _grad_tile(rows, vectors):
    """The weight-gradient tile for `rows` output channels x `vectors` taps (module
    docstring of kernels/blocked_conv.py's weight gradient)."""

    @intrinsic
    def grad_tile(typingctx, x, pix, p0, p1, taps, t, dy, yoff, ldy, dw, dwoff, lddw):
        sig = types.void(x, pix, p0, p1, taps, t, dy, yoff, ldy, dw, dwoff, lddw)

        def codegen(context, builder, sig, args):
            c = _IR(context, builder, sig, args)
            xd, pd, td, yd, dwd = c.data(0), c.data(1), c.data(4), c.data(6), c.data(9)
            p0, p1, t, yoff, ldy, dwoff, lddw = (args[i] for i in (2, 3, 5, 7, 8, 10, 11))
            i32, vec, fma, const, vector_at = c.i32, c.vec, c.fma, c.const, c.vector_at
            xbases = [builder.gep(xd, [builder.load(builder.gep(td, [builder.add(t, const(j))]))])
                      for j in range(vectors)]
            ybase = builder.gep(yd, [yoff])
            yrows = [builder.gep(ybase, [builder.mul(ldy, const(i))]) for i in range(rows)]
            p, acc = c.open_loop("grad", p0, [ir.Constant(vec, [0.0] * LANES)] * (rows * vectors))
            offset = builder.load(builder.gep(pd, [p]))
            xs = [c.load(vector_at(xbases[j], offset)) for j in range(vectors)]
            at = builder.mul(p, const(LANES))
            new = [None] * (rows * vectors)
            for i in range(rows):
                dyv = c.load(vector_at(yrows[i], at))
                for j in range(vectors):
                    new[i * vectors + j] = builder.call(fma, [dyv, xs[j], acc[i * vectors + j]])
            c.close_loop(p, acc, new, p1)
            undef = ir.Constant(vec, ir.Undefined)
            dwbase = builder.gep(dwd, [dwoff])
            for i in range(rows):
                for j in range(vectors):
                    v = new[i * vectors + j]
                    width = LANES
                    while width > 1:        # halves added pairwise: a fixed tree
                        width //= 2
                        upper = builder.shuffle_vector(v, undef, ir.Constant(
                            ir.VectorType(i32, LANES),
                            [width + q if q < width else q for q in range(LANES)]))
                        v = builder.fadd(v, upper)
                    total = builder.extract_element(v, ir.Constant(i32, 0))
                    slot = builder.gep(dwbase, [builder.add(builder.mul(lddw, const(i)),
                                                            const(j))])
                    builder.store(builder.fadd(builder.load(slot), total), slot)
            return context.get_dummy_value()

        return sig, codegen

    return grad_tile


#: y = the tile's sums; y += them (the caller guarantees k1 > k0); the _1 and _2 forms
#: have one and two vectors, for the end of a row of tiles
tile_store = _tile(ROWS, VECTORS, accumulate=False)
tile_add = _tile(ROWS, VECTORS, accumulate=True)
tile_store_1 = _tile(ROWS, 1, accumulate=False)
tile_add_1 = _tile(ROWS, 1, accumulate=True)
tile_store_2 = _tile(ROWS, 2, accumulate=False)
tile_add_2 = _tile(ROWS, 2, accumulate=True)
#: the same tiles HALF_ROWS high, for a last block of at most HALF_ROWS output channels: a
#: group of 8k + 1..4 filters (LeNet's 20 and 50, or a compacted group) then computes 8k + 4
#: sums, not 8k + 8 (at 90% row sparsity CaffeNet's grouped layers computed 23-33% more
#: rows than they kept)
HALF_ROWS = ROWS // 2
half_store = _tile(HALF_ROWS, VECTORS, accumulate=False)
half_add = _tile(HALF_ROWS, VECTORS, accumulate=True)
half_store_1 = _tile(HALF_ROWS, 1, accumulate=False)
half_add_1 = _tile(HALF_ROWS, 1, accumulate=True)
half_store_2 = _tile(HALF_ROWS, 2, accumulate=False)
half_add_2 = _tile(HALF_ROWS, 2, accumulate=True)
#: one filter's sums added onto up to 16 vectors of a plane (ROWS 1): the direct sparse
#: convolution's inner loop (kernels/direct_conv.py), a listed weight per step, each vector
#: an independent FMA chain
#: (PLANE_TILES[v]: v vectors, v = 1..PLANE_MAX_VECTORS)
PLANE_MAX_VECTORS = 16
PLANE_TILES = (None,) + tuple(_tile(1, v, accumulate=True)
                              for v in range(1, PLANE_MAX_VECTORS + 1))
#: dw[i, j] += sum over p in [p0, p1) and the lanes of dy[i, p] * x[pix[p] + taps[t + j]],
#: for GRAD_ROWS output channels x GRAD_TAPS taps, or x three or one at the end of a filter
#: (the caller guarantees p1 > p0). Four rows x six taps loads ten vectors per 24 FMAs; on the
#: Xeon it ran 5-25% faster than eight x three, whose dy chunk crowded the image out of L1
GRAD_ROWS, GRAD_TAPS = 4, 6
grad_tile = _grad_tile(GRAD_ROWS, GRAD_TAPS)
grad_tile_3 = _grad_tile(GRAD_ROWS, 3)
grad_tile_1 = _grad_tile(GRAD_ROWS, 1)
#: the indexed tiles (_indexed_tile): three, two and one vectors wide, storing or adding
indexed_store = _indexed_tile(ROWS, VECTORS, accumulate=False)
indexed_add = _indexed_tile(ROWS, VECTORS, accumulate=True)
indexed_store_2 = _indexed_tile(ROWS, 2, accumulate=False)
indexed_add_2 = _indexed_tile(ROWS, 2, accumulate=True)
indexed_store_1 = _indexed_tile(ROWS, 1, accumulate=False)
indexed_add_1 = _indexed_tile(ROWS, 1, accumulate=True)
