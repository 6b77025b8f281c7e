"""A 16 x 16 float transpose in registers, written in LLVM IR: the lanes layout's packing
and unpacking (kernels/blocked_conv.py, kernels/blocked_weight_grad.py).

    dst[d0 + j*d_ld + i] = src[s0 + i*s_ld + j] (+ add)   for i < rows_in, j < cols_in
    dst[d0 + j*d_ld + i] = 0 (+ add)                       for rows_in <= i < cols_out

Only the rows j < cols_in of dst are written, each its first `cols_out` floats (cols_out <=
LANES; the rows past rows_in are zeros). The loads and stores are masked (AVX-512's masked
moves touch no memory outside the mask), so a block at the end of a row or of an array
reads and writes only its own floats.

The lanes layout holds one pixel of 16 images in one vector, so packing an image block and
writing the tiles' sums back are transposes of 16 x 16 blocks. Numba's loops ran them one
float at a time (about 1.8 floats per ns: CaffeNet conv3's 16 images took 0.5 ms to pack and
0.7 ms to unpack, a fifth of LOWERED_CCNMM's time at 90% sparsity); here a block is 16
loads, four rounds of 16 two-vector shuffles and 16 stores.

Every value is moved, not computed, so the bits are kept (-0.0 and NaN included), except
where `add` is given: then each stored value is value + add, as the scalar loop's was.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .vector_tile import LANES, _IR


def _transpose_codegen(with_add):
    def codegen(context, builder, sig, args):
        c = _IR(context, builder, sig, args)
        src, dst = c.data(0), c.data(5)
        s0, s_ld, rows_in, cols_in, d0, d_ld, cols_out = (args[i] for i in (1, 2, 3, 4, 6, 7, 8))
        i32, vec = c.i32, c.vec
        bools = ir.VectorType(ir.IntType(1), LANES)
        ptr = vec.as_pointer()
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [ptr, i32, bools, vec]),
            f"llvm.masked.load.v{LANES}f32.p0")
        masked_store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vec, ptr, i32, bools]),
            f"llvm.masked.store.v{LANES}f32.p0")
        iota = ir.Constant(ir.VectorType(i32, LANES), list(range(LANES)))
        undef = ir.Constant(vec, ir.Undefined)
        zero = ir.Constant(vec, [0.0] * LANES)
        align = ir.Constant(i32, 4)

        def first(count):
            """The mask of lanes < count (count: i64)."""
            splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(ir.VectorType(i32, LANES), ir.Undefined),
                                       builder.trunc(count, i32), ir.Constant(i32, 0)),
                ir.Constant(ir.VectorType(i32, LANES), ir.Undefined),
                ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))
            return builder.icmp_unsigned("<", iota, splat)

        none = ir.Constant(bools, [0] * LANES)

        def unless_past(index, bound, mask):
            """mask where index < bound, else no lane (one scalar select per row: the lane
            masks themselves are made once per block)."""
            return builder.select(builder.icmp_signed("<", c.const(index), bound), mask, none)

        sbase = builder.gep(src, [s0])
        load_mask, store_mask = first(cols_in), first(cols_out)
        rows = []
        for i in range(LANES):
            at = c.vector_at(sbase, builder.mul(s_ld, c.const(i)))
            rows.append(builder.call(masked_load,
                                     [at, align, unless_past(i, rows_in, load_mask), zero]))
        width = LANES // 2
        while width:
            # swap the off-diagonal width x width blocks of every 2*width x 2*width block
            low = ir.Constant(ir.VectorType(i32, LANES),
                              [q if q & width == 0 else LANES + q - width for q in range(LANES)])
            high = ir.Constant(ir.VectorType(i32, LANES),
                               [q + width if q & width == 0 else LANES + q for q in range(LANES)])
            for i in range(LANES):
                if i & width == 0:
                    a, b = rows[i], rows[i + width]
                    rows[i] = builder.shuffle_vector(a, b, low)
                    rows[i + width] = builder.shuffle_vector(a, b, high)
            width //= 2
        if with_add:
            scalar = args[9]
            shift = builder.shuffle_vector(
                builder.insert_element(undef, scalar, ir.Constant(i32, 0)), undef,
                ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))
            rows = [builder.fadd(v, shift) for v in rows]
        dbase = builder.gep(dst, [d0])
        for j in range(LANES):
            at = c.vector_at(dbase, builder.mul(d_ld, c.const(j)))
            builder.call(masked_store, [rows[j], at, align, unless_past(j, cols_in, store_mask)])
        return context.get_dummy_value()
    return codegen


@intrinsic
def transpose_block(typingctx, src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out):
    """The module docstring's transpose, values moved bit for bit."""
    sig = types.void(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out)
    return sig, _transpose_codegen(with_add=False)


@intrinsic
def transpose_block_add(typingctx, src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out,
                        add):
    """The transpose with `add` (a float of dst's type) added to every stored value."""
    sig = types.void(src, s0, s_ld, rows_in, cols_in, dst, d0, d_ld, cols_out, add)
    return sig, _transpose_codegen(with_add=True)
