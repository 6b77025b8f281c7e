"""im2col / col2im (Caffe's im2col_cpu / col2im_cpu), batched with the batch axis innermost.

Caffe lowers one image at a time: col[r, q] with row r = (c * kernel_h + ki) * kernel_w + kj
and column q = oh * out_w + ow, then runs one GEMM per image. Here the whole batch is lowered
at once with the batch as the fastest axis:

    col[r, (oh * out_w + ow) * n + i] = x[i, c, ih, iw]       (0 outside the image)
    ih = oh * stride_h - pad_h + ki * dilation_h,  iw = ow * stride_w - pad_w + kj * dilation_w

so that a convolution is ONE GEMM per group, W (M, K) @ col (K, P*n), P = out_h * out_w. The
image is first moved to a "batch-minor" (C, H, W, n) array (`batch_minor`); then every column
segment the lowering copies is a contiguous run of n (stride > 1) or (ow_hi - ow_lo) * n
(stride 1) elements, which Numba vectorizes, where Caffe's layout copies runs of out_w (8-32)
elements (measured 2-5x slower, on cifar10_quick's shapes). With n = 1 the layout is exactly
Caffe's, so `im2col` / `col2im` below are Caffe's single-image functions.

Sizes, as Caffe computes them:
    out_h = (H + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) // stride_h + 1

Kernels are dtype-generic (Numba compiles float32 and float64 separately), single-threaded
and release the GIL: kernels/gemm.py's split_batch runs them on slices of the batch, one per
core, next to single-threaded GEMMs (one fork/join per layer pass instead of one per kernel).
col2im sums each pixel's contributions in Caffe's order (ki, then kj, ascending).

Inner loops index flat views with unsigned offsets (`dst[row + U(t)]`): with a signed index
such as `a[base + t]` Numba emits a negative-index wraparound check that blocks vectorization,
and slicing a view per short row costs more than the copy (both measured 2-7x slower).
"""
from numba import uint64 as U

from .jit import kernel

#: tile edge of the batch-major <-> batch-minor transposes (elements)
_TILE = 32


def conv_out_size(size, kernel, pad, stride, dilation):
    """Caffe's output extent of a convolution along one axis (C integer division, which
    truncates toward zero, so an input smaller than the kernel extent gives Caffe's size)."""
    extent = dilation * (kernel - 1) + 1
    span = size + 2 * pad - extent
    return (abs(span) // stride) * (1 if span >= 0 else -1) + 1


@kernel(inline="always")
def _valid_range(pad, k, dilation, stride, size, out_size):
    """(off, lo, hi): outputs o in [lo, hi) read input o * stride + off inside [0, size)."""
    off = k * dilation - pad
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    top = size - 1 - off
    hi = top // stride + 1 if top >= 0 else 0
    if hi > out_size:
        hi = out_size
    if lo > hi:
        lo = hi
    return off, lo, hi


@kernel(nogil=True)
def im2col_bm(xt, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
              dilation_w, out_h, out_w, col):
    """xt (C, H, W, n) -> col (C*kh*kw, out_h*out_w*n); every element of col is written."""
    channels, _, _, n = xt.shape
    if col.shape[0] != channels * kernel_h * kernel_w or col.shape[1] != out_h * out_w * n:
        raise ValueError("im2col: col does not have shape (C*kh*kw, out_h*out_w*n)")
    for r in range(channels * kernel_h * kernel_w):
        _lower_row(xt, r, r, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                   dilation_h, dilation_w, out_h, out_w, col)
    return col


@kernel(nogil=True)
def im2col_rows_bm(xt, rows, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                   dilation_h, dilation_w, out_h, out_w, col):
    """col[i] = row rows[i] of im2col_bm's col (len(rows), out_h*out_w*n): the lowering of
    only the weight columns a structured-sparse weight keeps (LOWERED_CCNMM)."""
    channels, _, _, n = xt.shape
    if col.shape[0] != rows.shape[0] or col.shape[1] != out_h * out_w * n:
        raise ValueError("im2col_rows: col does not have shape (len(rows), out_h*out_w*n)")
    for i in range(rows.shape[0]):
        if rows[i] < 0 or rows[i] >= channels * kernel_h * kernel_w:
            raise ValueError("im2col_rows: a row is outside [0, C*kh*kw)")
        _lower_row(xt, rows[i], i, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                   dilation_h, dilation_w, out_h, out_w, col)
    return col


@kernel(nogil=True, inline="always")
def _lower_row(xt, r, dst_row, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
               dilation_h, dilation_w, out_h, out_w, col):
    """col[dst_row] = lowered row r = (c * kernel_h + ki) * kernel_w + kj of xt."""
    _, height, width, n = xt.shape
    kk = kernel_h * kernel_w
    rowlen = out_w * n
    src = xt.reshape(-1)
    dst = col.reshape(-1)
    zero = col.dtype.type(0)
    c = r // kk
    ki = (r - c * kk) // kernel_w
    kj = r - c * kk - ki * kernel_w
    off_w, ow_lo, ow_hi = _valid_range(pad_w, kj, dilation_w, stride_w, width, out_w)
    for oh in range(out_h):
        row = U((dst_row * out_h + oh) * rowlen)
        ih = oh * stride_h - pad_h + ki * dilation_h
        if ih < 0 or ih >= height:
            for t in range(rowlen):
                dst[row + U(t)] = zero
            continue
        for t in range(ow_lo * n):
            dst[row + U(t)] = zero
        for t in range(ow_hi * n, rowlen):
            dst[row + U(t)] = zero
        image_row = U((c * height + ih) * width * n)
        if stride_w == 1:
            s0 = image_row + U((ow_lo + off_w) * n)
            d0 = row + U(ow_lo * n)
            for t in range((ow_hi - ow_lo) * n):
                dst[d0 + U(t)] = src[s0 + U(t)]
        else:
            for ow in range(ow_lo, ow_hi):
                s0 = image_row + U((ow * stride_w + off_w) * n)
                d0 = row + U(ow * n)
                for t in range(n):
                    dst[d0 + U(t)] = src[s0 + U(t)]


@kernel(nogil=True)
def col2im_bm(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
              dilation_w, out_h, out_w, xt):
    """col (C*kh*kw, out_h*out_w*n) -> xt (C, H, W, n), OVERWRITING xt (Caffe zeroes first).

    Row by row of the image (c, ih): each gathers every (ki, oh) that lands on it, so each
    pixel sums its contributions over (ki, kj) ascending, Caffe's order.
    """
    channels, height, width, n = xt.shape
    kk = kernel_h * kernel_w
    rowlen = out_w * n
    if col.shape[0] != channels * kk or col.shape[1] != out_h * rowlen:
        raise ValueError("col2im: col does not have shape (C*kh*kw, out_h*out_w*n)")
    src = col.reshape(-1)
    dst = xt.reshape(-1)
    zero = xt.dtype.type(0)
    for task in range(channels * height):
        c = task // height
        ih = task - c * height
        image_row = U(task * width * n)
        for t in range(width * n):
            dst[image_row + U(t)] = zero
        for ki in range(kernel_h):
            num = ih + pad_h - ki * dilation_h
            if num < 0 or num % stride_h != 0:
                continue
            oh = num // stride_h
            if oh >= out_h:
                continue
            for kj in range(kernel_w):
                r = c * kk + ki * kernel_w + kj
                row = U((r * out_h + oh) * rowlen)
                off_w, ow_lo, ow_hi = _valid_range(pad_w, kj, dilation_w, stride_w, width,
                                                   out_w)
                if stride_w == 1:
                    d0 = image_row + U((ow_lo + off_w) * n)
                    s0 = row + U(ow_lo * n)
                    for t in range((ow_hi - ow_lo) * n):
                        dst[d0 + U(t)] += src[s0 + U(t)]
                else:
                    for ow in range(ow_lo, ow_hi):
                        d0 = image_row + U((ow * stride_w + off_w) * n)
                        s0 = row + U(ow * n)
                        for t in range(n):
                            dst[d0 + U(t)] += src[s0 + U(t)]
    return xt


# --- batch-major (n, R) <-> batch-minor (R, n), R = channels * plane ----------------------
# Tiles never straddle a plane boundary, so each tile has one channel: its bias (forward)
# or its partial bias-gradient sum (backward) is a scalar.

@kernel(nogil=True, fastmath={"reassoc"})
def batch_minor(a, plane, out, partial):
    """out (R, n) = a (n, R)^T. With len(partial) == number of tiles, partial[t] = sum of
    tile t (tiles ordered channel-major); see `bias_grad_from_partials`. The tile sums are
    reassociated (vectorized): the same order on every call, but not Caffe's gemv order."""
    n, big_r = a.shape
    if out.shape[0] != big_r or out.shape[1] != n or big_r % plane != 0:
        raise ValueError("batch_minor: out must be a's transpose, R a multiple of plane")
    src = a.reshape(-1)
    dst = out.reshape(-1)
    tiles_q = (plane + _TILE - 1) // _TILE
    tiles_n = (n + _TILE - 1) // _TILE
    channels = big_r // plane
    want_sum = partial.shape[0] > 0
    for task in range(channels * tiles_q * tiles_n):
        ch = task // (tiles_q * tiles_n)
        rest = task - ch * (tiles_q * tiles_n)
        tq = rest // tiles_n
        tn = rest - tq * tiles_n
        r0 = ch * plane + tq * _TILE
        r1 = min(r0 + _TILE, (ch + 1) * plane)
        i0 = tn * _TILE
        i1 = min(i0 + _TILE, n)
        s = a.dtype.type(0)
        for i in range(i0, i1):
            # read a contiguous row piece, write with the small stride n
            s0 = U(i * big_r + r0)
            d0 = U(r0 * n + i)
            for t in range(r1 - r0):
                dst[d0 + U(t * n)] = src[s0 + U(t)]
            if want_sum:
                for t in range(r1 - r0):
                    s += src[s0 + U(t)]
        if want_sum:
            partial[task] = s
    return out


@kernel(nogil=True)
def batch_major(a, plane, bias, out):
    """out (n, R) = a (R, n)^T (+ bias[r // plane] when bias is non-empty)."""
    big_r, n = a.shape
    if out.shape[0] != n or out.shape[1] != big_r or big_r % plane != 0:
        raise ValueError("batch_major: out must be a's transpose, R a multiple of plane")
    src = a.reshape(-1)
    dst = out.reshape(-1)
    tiles_q = (plane + _TILE - 1) // _TILE
    tiles_n = (n + _TILE - 1) // _TILE
    channels = big_r // plane
    has_bias = bias.shape[0] > 0
    for task in range(channels * tiles_q * tiles_n):
        ch = task // (tiles_q * tiles_n)
        rest = task - ch * (tiles_q * tiles_n)
        tq = rest // tiles_n
        tn = rest - tq * tiles_n
        r0 = ch * plane + tq * _TILE
        r1 = min(r0 + _TILE, (ch + 1) * plane)
        i0 = tn * _TILE
        i1 = min(i0 + _TILE, n)
        b = bias[ch] if has_bias else a.dtype.type(0)
        for i in range(i0, i1):
            d0 = U(i * big_r + r0)
            s0 = U(r0 * n + i)
            if has_bias:
                for t in range(r1 - r0):
                    dst[d0 + U(t)] = src[s0 + U(t * n)] + b
            else:
                for t in range(r1 - r0):
                    dst[d0 + U(t)] = src[s0 + U(t * n)]
    return out


@kernel(nogil=True)
def add_transposed(src, dst):
    """dst (g, R, C) += src (g, C, R) transposed per group, in tiles (a strided NumPy add of
    a weight-sized transpose ran 40x slower than a contiguous one)."""
    g, cols, rows = src.shape
    if dst.shape[0] != g or dst.shape[1] != rows or dst.shape[2] != cols:
        raise ValueError("add_transposed: dst must be src transposed per group")
    s = src.reshape(-1)
    d = dst.reshape(-1)
    for grp in range(g):
        base = U(grp * rows * cols)
        for r0 in range(0, rows, _TILE):
            r1 = min(r0 + _TILE, rows)
            for c0 in range(0, cols, _TILE):
                c1 = min(c0 + _TILE, cols)
                for r in range(r0, r1):
                    d0 = base + U(r * cols)
                    for c in range(c0, c1):
                        d[d0 + U(c)] += s[base + U(c * rows + r)]
    return dst


@kernel(nogil=True)
def bias_grad_from_partials(partial, channels, bias_diff):
    """bias_diff[c] += the tile sums of channel c, in a fixed (deterministic) order."""
    per = partial.shape[0] // channels
    for c in range(channels):
        s = partial.dtype.type(0)
        for t in range(c * per, (c + 1) * per):
            s += partial[t]
        bias_diff[c] += s
    return bias_diff


def n_tiles(channels, plane, n):
    """Length of the `partial` array batch_minor fills."""
    return channels * (-(-plane // _TILE)) * (-(-n // _TILE))


# --- Caffe's single-image functions --------------------------------------------------------

def im2col(img, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
           dilation_w, col):
    """Caffe's im2col_cpu: img (C, H, W) -> col (C*kh*kw, out_h*out_w)."""
    _, height, width = img.shape
    out_h = conv_out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = conv_out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    im2col_bm(img[..., None], kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
              dilation_h, dilation_w, out_h, out_w, col)
    return col


def col2im(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
           dilation_w, img):
    """Caffe's col2im_cpu: col (C*kh*kw, out_h*out_w) -> img (C, H, W), overwritten."""
    _, height, width = img.shape
    out_h = conv_out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = conv_out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    col2im_bm(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
              dilation_w, out_h, out_w, img[..., None])
    return img
