"""2-d convolution by lowering (im2col + GEMM), batched: pure functions over arrays.

Notation (Caffe's BaseConvolutionLayer, in the "convolution view"): image x (N, C, H, W),
weight w (M, C/g, kh, kw), output y (N, M, OH, OW), groups g, K = C/g*kh*kw, P = OH*OW.

    forward          y_g = w_g @ col(x)_g  (+ bias)           per group g
    backward weight  dw_g += dy_g @ col(x)_g^T                (accumulates, as Caffe)
    backward data    dx = col2im(w_g^T @ dy_g)                (overwrites, as Caffe)
                     stride 1: dx = conv(dy, flipped w^T), pad d*(k-1) - p (same sums)
    bias             db += sum over n, p of dy                (accumulates)

Speed comes from lowering a whole chunk of the batch at once (see kernels/im2col.py): x is
moved to a batch-minor (C, H, W, n) array, col is (C*kh*kw, P*n), and each group is ONE
GEMM (M/g, K) x (K, P*n) in NumPy's BLAS instead of Caffe's n small per-image GEMMs. The
GEMM result (M, P, n) goes back to the blob's (n, M, P) in a tiled transpose that also adds
the bias (forward) or sums the bias gradient (backward). A 1x1, stride 1, pad 0 convolution
skips im2col: its lowered image is the batch-minor image itself. For stride 1 the data
gradient is itself a convolution, whose GEMM has the forward's shape instead of Caffe's
(K, M/g) x (M/g, P*n) with its short inner dimension, and needs no col2im.

The batch is processed in chunks whose column buffer stays under a limit that follows the
cache size (kernels/workspace_size.py);
buffers live in one module-level workspace shared by all layers (a net runs one layer at a
time), so memory is the largest single chunk, not the sum over layers.

Deconvolution is the same algebra with the roles of image and output swapped (its forward
is the convolution's backward-data), so it lives here too.

The forward product weight x lowered input goes through a `product` object (LoweredGemm
here), so that a sparse product (SSL's LOWERED_CSRMM, LOWERED_CCNMM) can reuse the lowering;
the engines that the layer picks by conv_mode live in kernels/conv_engines.py.
"""
from typing import NamedTuple

import numpy as np

from .gemm import batch_workers, parallel_matmul, split_batch, workspace
from .workspace_size import workspace_limit
from .im2col import (add_transposed, batch_major, batch_minor, bias_grad_from_partials,
                     col2im_bm, conv_out_size, im2col_bm, n_tiles)

#: upper bound, in bytes, of one worker's column buffer; larger slices of the batch are
#: processed in chunks, small enough that the lowered chunk and the GEMM output stay in
#: cache between im2col, the GEMM and the transposes. None: from the cache size
#: (workspace_size.workspace_limit); tests set a number.
WORKSPACE_LIMIT = None


class ConvGeometry(NamedTuple):
    kernel_h: int
    kernel_w: int
    pad_h: int = 0
    pad_w: int = 0
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    group: int = 1

    @property
    def is_1x1(self):
        """Caffe's is_1x1_: the lowered image is the image itself (dilation is irrelevant)."""
        return (self.kernel_h == 1 and self.kernel_w == 1 and self.stride_h == 1
                and self.stride_w == 1 and self.pad_h == 0 and self.pad_w == 0)

    def output_shape(self, height, width):
        """Convolution output (OH, OW) for an (H, W) image."""
        return (conv_out_size(height, self.kernel_h, self.pad_h, self.stride_h,
                              self.dilation_h),
                conv_out_size(width, self.kernel_w, self.pad_w, self.stride_w,
                              self.dilation_w))

    def deconv_output_shape(self, height, width):
        """Deconvolution output: s*(H-1) + d*(k-1)+1 - 2p per axis."""
        return (self.stride_h * (height - 1) + self.dilation_h * (self.kernel_h - 1) + 1
                - 2 * self.pad_h,
                self.stride_w * (width - 1) + self.dilation_w * (self.kernel_w - 1) + 1
                - 2 * self.pad_w)

    @property
    def im2col_args(self):
        return (self.kernel_h, self.kernel_w, self.pad_h, self.pad_w, self.stride_h,
                self.stride_w, self.dilation_h, self.dilation_w)


class LoweredGemm:
    """The dense product after lowering: Caffe's GEMM.

    `forward(in_t, w3, geo, out_t, ws)` computes one chunk's output out_t (M, OH, OW, n)
    from its batch-minor image in_t: it lowers the image and calls `matmul(w3, col3, out3)`,
    out3 = w3 @ col3 for w3 (g, M/g, K) and col3 (g, K, n*P). A sparse product overrides
    `matmul` (and may cache a compressed weight, rebuilt when `prepare` sees new weights),
    or `forward` when it lowers less than the whole image.
    """

    def prepare(self, w3):
        """Called once per forward with the effective weight, before any matmul."""

    def lowered_rows(self, rows):
        """Rows of the lowered image (of `rows`) that `forward` lowers at once after
        `prepare`: what sizes the batch's chunks."""
        return rows

    def forward(self, in_t, w3, geo, out_t, ws):
        g, mg, k = w3.shape
        col = _lower(in_t, geo, out_t.shape[1:3], ws)
        self.matmul(w3, col.reshape(g, k, -1), out_t.reshape(g, mg, -1))

    def matmul(self, w3, col3, out3):
        np.matmul(w3, col3, out=out3)


DENSE = LoweredGemm()
_EMPTY = {}


def _empty(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _EMPTY:
        _EMPTY[dtype] = np.empty(0, dtype)
    return _EMPTY[dtype]


def _chunks(start, stop, per_image_elems, itemsize):
    """Ranges of [start, stop) whose largest lowered buffer (per_image_elems per image)
    fits WORKSPACE_LIMIT, as even as possible."""
    n_img = stop - start
    per_image = max(1, per_image_elems * itemsize)
    most = max(1, (WORKSPACE_LIMIT or workspace_limit()) // per_image)
    n_chunks = -(-n_img // most)
    size = max(-(-n_img // n_chunks), 1) if n_chunks else 1
    return [(s, min(s + size, stop)) for s in range(start, stop, size)]


def _flipped_data_path(geo, in_hw, out_hw):
    """Whether the data gradient runs as a convolution with the flipped kernel: stride 1,
    a pad within the kernel extent, and an image not much larger than the output (the
    flipped convolution computes over the image, so a 'valid' 5x5 convolution of a 12x12
    image would do 144/64 = 2.25 times the work of Caffe's way)."""
    return (geo.stride_h == 1 and geo.stride_w == 1
            and geo.pad_h <= geo.dilation_h * (geo.kernel_h - 1)
            and geo.pad_w <= geo.dilation_w * (geo.kernel_w - 1)
            and 4 * in_hw[0] * in_hw[1] <= 5 * out_hw[0] * out_hw[1])


def _col_elems(c, m, geo, in_hw, out_hw, data_grad=True):
    """Per-image size of the largest column buffer a pass lowers: the image's (forward,
    weight gradient, Caffe's data gradient) or, with data_grad on the flipped path, the
    output's."""
    kk = geo.kernel_h * geo.kernel_w
    size = c * kk * out_hw[0] * out_hw[1]
    if data_grad and _flipped_data_path(geo, in_hw, out_hw):
        size = max(size, m * kk * in_hw[0] * in_hw[1])
    return size


def _lower(xt, geo, out_hw, ws):
    """Lowered image (C*kh*kw, P*n) of a batch-minor image xt (C, H, W, n)."""
    c, _, _, n = xt.shape
    if geo.is_1x1:
        return xt.reshape(c, -1)
    kk = geo.kernel_h * geo.kernel_w
    col = ws.get("col", (c * kk, out_hw[0] * out_hw[1] * n), xt.dtype)
    im2col_bm(xt, *geo.im2col_args, out_hw[0], out_hw[1], col)
    return col


def _to_minor(a, ws, name, partial=None):
    """Batch-minor copy (C, H, W, n) of a (n, C, H, W), optionally with bias partial sums."""
    n, c, h, w = a.shape
    out = ws.get(name, (c, h, w, n), a.dtype)
    batch_minor(a.reshape(n, -1), h * w, out.reshape(-1, n),
                _empty(a.dtype) if partial is None else partial)
    return out


def _to_major(at, out, bias=None):
    """out (n, C, H, W) = batch-minor at (C, H, W, n) (+ bias per channel)."""
    n, c, h, w = out.shape
    batch_major(at.reshape(-1, n), h * w, _empty(out.dtype) if bias is None else bias,
                out.reshape(n, -1))


def _bias_partials(shape, dtype, ws):
    n, c, h, w = shape
    return ws.get("partial", (n_tiles(c, h * w, n),), dtype)


def _check(x, w, geo, y):
    n, c = x.shape[:2]
    m = w.shape[0]
    g = geo.group
    if c != w.shape[1] * g or m % g:
        raise ValueError(f"weight {w.shape} does not fit {c} channels in {g} group(s)")
    if y.shape[:2] != (n, m):
        raise ValueError(f"output {y.shape} does not fit batch {n} and {m} outputs")


def _weight3(w, g):
    return np.ascontiguousarray(w).reshape(g, w.shape[0] // g, -1)


# --- the three lowered products, on batch-minor images -------------------------------------
# in_t (C, H, W, n) is the convolution's image, out_t (M, OH, OW, n) its output.

def _forward(in_t, w3, geo, out_t, product, ws):
    """out_t = w * in_t: one GEMM per group over the lowered batch (LoweredGemm.forward)."""
    product.forward(in_t, w3, geo, out_t, ws)


def _backward_weight(in_t, out_t, geo, dw_t, ws, accumulate):
    """dw_t (g, K, M/g) = (or += with accumulate) lowered image x out_t-gradient^T, per group.

    The weight gradient is kept transposed while a worker sums its chunks: OpenBLAS runs
    col (K, P*n) x dy^T (P*n, M/g) 1.4-1.8x faster than dy x col^T on the cifar10/LeNet shapes
    (one thread), and the chunks' sums are then contiguous adds; the one transposition into
    the (M, C/g, kh, kw) gradient happens in `_reduce`.
    """
    g, k, mg = dw_t.shape
    col = _lower(in_t, geo, out_t.shape[1:3], ws).reshape(g, k, -1)
    dy_t = out_t.reshape(g, mg, -1).transpose(0, 2, 1)
    if not accumulate:
        np.matmul(col, dy_t, out=dw_t)
        return
    part = ws.get("dw_chunk", dw_t.shape, dw_t.dtype)
    np.matmul(col, dy_t, out=part)
    dw_t += part


def _flipped_weight(w, geo):
    """(g, C/g, M/g*kh*kw): each group's kernel transposed and rotated 180 degrees, the
    weight of the data gradient's convolution on the flipped path."""
    g = geo.group
    m, cg = w.shape[:2]
    w5 = w.reshape(g, m // g, cg, geo.kernel_h, geo.kernel_w)
    return np.ascontiguousarray(w5[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)).reshape(
        g, cg, -1)


def flipped_geometry(geo, in_hw, out_hw):
    """The geometry of the convolution of dy that gives dx on the flipped path (see
    _flipped_data_path): stride 1, pad d*(k-1) - p; None off that path."""
    if not _flipped_data_path(geo, in_hw, out_hw):
        return None
    kh, kw = geo.kernel_h, geo.kernel_w
    return ConvGeometry(kh, kw, geo.dilation_h * (kh - 1) - geo.pad_h,
                        geo.dilation_w * (kw - 1) - geo.pad_w, 1, 1, geo.dilation_h,
                        geo.dilation_w, geo.group)


def flipped_weight4(w, geo):
    """_flipped_weight as a 4-d weight (C, M/g, kh, kw) of that convolution."""
    return _flipped_weight(w, geo).reshape(-1, w.shape[0] // geo.group, geo.kernel_h,
                                           geo.kernel_w)


def _backward_data(out_t, w, flip, geo, in_t, ws):
    """in_t = the image gradient of out_t (OVERWRITTEN).

    With `flip` (_flipped_weight, on the flipped path, see _flipped_data_path): a forward
    convolution of out_t with the flipped kernel, pad d*(k-1) - p, and no col2im. Its GEMM,
    (C/g, M/g*kh*kw) x (., H*W*n), has the forward's shape; Caffe's w^T x out_t has an
    inner dimension of only M/g, which OpenBLAS ran at 0.65x the rate with two threads on
    cifar10_quick's conv2 (about the same rate with one).
    Otherwise: col2im(w^T x out_t), Caffe's way.
    """
    g = geo.group
    m, cg = w.shape[:2]
    mg = m // g
    if flip is not None:
        geo_t = flipped_geometry(geo, in_t.shape[1:3], out_t.shape[1:3])
        col = _lower(out_t, geo_t, in_t.shape[1:3], ws)
        np.matmul(flip, col.reshape(g, mg * geo.kernel_h * geo.kernel_w, -1),
                  out=in_t.reshape(g, cg, -1))
        return
    w3 = _weight3(w, g)
    k = w3.shape[2]
    if geo.is_1x1:
        np.matmul(w3.transpose(0, 2, 1), out_t.reshape(g, mg, -1), out=in_t.reshape(g, k, -1))
        return
    n = out_t.shape[-1]
    dcol = ws.get("col", (g * k, out_t.shape[1] * out_t.shape[2] * n), in_t.dtype)
    np.matmul(w3.transpose(0, 2, 1), out_t.reshape(g, mg, -1), out=dcol.reshape(g, k, -1))
    col2im_bm(dcol, *geo.im2col_args, out_t.shape[1], out_t.shape[2], in_t)


def _data_weight(w, geo, in_hw, out_hw):
    """The flipped weight when the data gradient takes the flipped path, else None."""
    return _flipped_weight(w, geo) if _flipped_data_path(geo, in_hw, out_hw) else None


# --- the public functions -------------------------------------------------------------------
# Each splits the batch over the cores (kernels/gemm.py's split_batch); a worker processes
# its slice chunk by chunk in its own workspace. Gradients of shared parameters are summed
# per worker, then added in worker order (deterministic).

def conv2d_forward(x, w, bias, geo, y, product=DENSE, epilogue=None):
    """y (N, M, OH, OW) = conv(x (N, C, H, W), w (M, C/g, kh, kw)) + bias (M,) or None,
    then a ChannelEpilogue (None: none), applied to each image or channel range as a worker
    finishes it, while it is in cache.

    `product.matmul` runs in the worker threads, so products must be thread-safe after
    `product.prepare` (called once, here).
    """
    _check(x, w, geo, y)
    if y.size == 0 or x.size == 0:
        y[...] = 0 if bias is None or y.size == 0 else bias[None, :, None, None]
        if epilogue is not None:
            epilogue.apply(y)
        return y
    n_img, c, h, wd = x.shape
    m, oh, ow = y.shape[1:]
    w3 = _weight3(w, geo.group)
    macs = y.size * w[0].size
    if (n_img == 1 and product is DENSE and macs >= ONE_IMAGE_SPLIT_MIN_MACS
            and batch_workers() > 1 and x.flags.c_contiguous and y.flags.c_contiguous):
        _one_image_forward(x, w3, bias, geo, y, epilogue)
        return y
    if (geo.is_1x1 and product is DENSE and n_img > 1 and oh * ow >= POINTWISE_MIN_PIXELS
            and x.flags.c_contiguous and y.flags.c_contiguous):
        _pointwise_forward(x, w3, bias, y, epilogue)
        return y
    if (geo.is_1x1 and product is DENSE and geo.group == 1 and oh * ow == 1
            and x.flags.c_contiguous and y.flags.c_contiguous):
        # one pixel per image (a classifier written as a convolution): the images are the
        # rows of one product, as an InnerProduct's; the threads split the weight rather
        # than each reading all of it. MobileNet's fc7 at batch 8: 0.26 -> 0.15 ms. BLAS's
        # order of the c terms may differ from the lowered path's (the same rounding bound)
        parallel_matmul(x.reshape(n_img, c), w3[0].T, y.reshape(n_img, m))
        if bias is not None:
            y.reshape(n_img, m)[...] += bias
        if epilogue is not None:
            epilogue.apply(y)
        return y
    product.prepare(w3)
    col_elems = product.lowered_rows(c * geo.kernel_h * geo.kernel_w) * oh * ow

    def work(worker, start, stop):
        ws = workspace(worker)
        for s, e in _chunks(start, stop, col_elems, x.itemsize):
            if e - s == 1 and x.flags.c_contiguous and y.flags.c_contiguous:
                # one image: batch-minor is the image's own layout, so no transposes
                _forward(x[s].reshape(c, h, wd, 1), w3, geo, y[s].reshape(m, oh, ow, 1),
                         product, ws)
                if epilogue is not None:
                    epilogue.apply_images(y, s, e, bias)
                elif bias is not None:
                    y[s] += bias.reshape(m, 1, 1)
                continue
            in_t = _to_minor(x[s:e], ws, "in_t")
            out_t = ws.get("out_t", (m, oh, ow, e - s), y.dtype)
            _forward(in_t, w3, geo, out_t, product, ws)
            _to_major(out_t, y[s:e], bias)
            if epilogue is not None:
                epilogue.apply_images(y, s, e)

    split_batch(n_img, work, macs=macs)
    return y


#: a 1x1 convolution of images of this many pixels or more multiplies each image as it
#: lies (_pointwise_forward)
POINTWISE_MIN_PIXELS = 100


def _pointwise_forward(x, w3, bias, y, epilogue=None):
    """y = conv(x) + bias for a 1x1 convolution (stride 1, no padding): the image is its
    own lowered matrix, so each worker multiplies its images in place, one batched matmul,
    without the batch-minor copies in and out. Two threads, batch 8, against those copies:
    mobilenet-0.5's pointwise layers at 14x14 and 28x28 1.2-1.5x faster (256 -> 256 at
    14x14: 0.80 / 0.98 ms), level at 7x7. The same sums in the same order. An epilogue
    (and the bias) runs on each worker's images after its product: image by image, right
    after each product, was no faster (its values are not in the core's L2 either way)."""
    n, c = x.shape[:2]
    g, mg, cg = w3.shape
    xg = x.reshape(n, g, cg, -1)
    yg = y.reshape(n, g, mg, -1)
    bias3 = None if bias is None else bias.reshape(g, mg, 1)

    def work(worker, start, stop):
        np.matmul(w3, xg[start:stop], out=yg[start:stop])
        if epilogue is not None:
            epilogue.apply_images(y, start, stop, bias)
        elif bias3 is not None:
            yg[start:stop] += bias3

    split_batch(n, work)


#: a lowered image from this many multiply-adds has its product split over the output
#: channels between our workers (_one_image_forward); below, one thread. 1 << 23 until the
#: pool polled through a pass; now 1 << 22 made mobilenet-0.5's TEST forward at batch 1 4%
#: faster (5.20 -> 5.00 ms: its 6.4 M pointwise layers), CaffeNet and cifar10_quick level
ONE_IMAGE_SPLIT_MIN_MACS = 1 << 22


def _one_image_forward(x, w3, bias, geo, y, epilogue=None):
    """y = conv(x) + bias for a batch of one: lowered once on the calling thread, then each
    worker multiplies its rows of every group's weight. Our workers rather than OpenBLAS's
    threads: an OpenBLAS thread spins after its call (OPENBLAS_THREAD_TIMEOUT, 0.1 s unless
    set before NumPy loaded), and took the core that the next layer's workers needed
    (mobilenet-0.5's TEST forward at batch 1: 34 ms against 11)."""
    _, c, h, wd = x.shape
    m, oh, ow = y.shape[1:]
    g, mg, k = w3.shape
    col3 = _lower(x[0].reshape(c, h, wd, 1), geo, (oh, ow), workspace(0)).reshape(g, k, -1)
    out3 = y[0].reshape(g, mg, -1)
    bias3 = None if bias is None else bias.reshape(g, mg, 1)

    def work(worker, lo, hi):
        for gi in range(g):
            np.matmul(w3[gi, lo:hi], col3[gi], out=out3[gi, lo:hi])
            if bias3 is not None:
                out3[gi, lo:hi] += bias3[gi, lo:hi]
            if epilogue is not None:
                epilogue.apply_channels(y, gi * mg + lo, gi * mg + hi)

    split_batch(mg, work)


def conv2d_backward(x, w, dy, geo, dx=None, dw=None, db=None):
    """Gradients of conv2d_forward given dy (N, M, OH, OW).

    dx (N, C, H, W) is OVERWRITTEN; dw (M, C/g, kh, kw) and db (M,) are ACCUMULATED (+=).
    Pass None for the ones not wanted.
    """
    _check(x, w, geo, dy)
    if dy.size == 0 or x.size == 0:
        if dx is not None:
            dx[...] = 0
        return dx
    n_img, c, h, wd = x.shape
    m, oh, ow = dy.shape[1:]
    g = geo.group
    as_they_lie = geo.is_1x1 and all(a is None or a.flags.c_contiguous for a in (x, dy, dx))
    if as_they_lie and g == 1 and oh * ow == 1:
        _one_pixel_backward(x.reshape(n_img, c), w.reshape(m, c), dy.reshape(n_img, m),
                            None if dx is None else dx.reshape(n_img, c), dw, db)
        return dx
    if as_they_lie and (dw is None or dw.flags.c_contiguous):
        _pointwise_backward(x, _weight3(w, g), dy, dx, dw, db)
        return dx
    k = w[0].size
    col_elems = _col_elems(c, m, geo, (h, wd), (oh, ow), dx is not None)
    flip = None if dx is None else _data_weight(w, geo, (h, wd), (oh, ow))

    def work(worker, start, stop):
        ws = workspace(worker)
        dw_part = None if dw is None else ws.get("dw_part", (g, k, m // g), dw.dtype)
        db_part = None if db is None else ws.zeros("db_part", (m,), db.dtype)
        for s, e in _chunks(start, stop, col_elems, x.itemsize):
            partial = None if db is None else _bias_partials(dy[s:e].shape, dy.dtype, ws)
            out_t = _to_minor(dy[s:e], ws, "out_t", partial)
            if db is not None:
                bias_grad_from_partials(partial, m, db_part)
            if dw is not None:
                in_t = _to_minor(x[s:e], ws, "in_t")
                _backward_weight(in_t, out_t, geo, dw_part, ws, accumulate=s > start)
            if dx is not None:
                in_t = ws.get("in_t", (c, h, wd, e - s), dx.dtype)
                _backward_data(out_t, w, flip, geo, in_t, ws)
                _to_major(in_t, dx[s:e])
        return dw_part, db_part

    _reduce(split_batch(n_img, work), dw, db)
    return dx


#: a 1x1 convolution's weight gradient over images of fewer pixels is one product per
#: worker over its images side by side (copied so), not one per image: a product over 49
#: pixels is too short for OpenBLAS. Two threads, batch 8, gradients of both: 512 -> 512 at
#: 7x7 2.20 -> 1.93 ms, 256 -> 512 1.17 -> 1.08; at 14x14 level, at 28x28 1.87 -> 2.07
POINTWISE_CONCAT_PIXELS = 100


def _pointwise_backward(x, w3, dy, dx, dw, db):
    """The gradients of a 1x1 convolution (stride 1, no padding) on images as they lie, as
    _pointwise_forward: each worker's dx is one batched product w^T dy over its images, its
    dw the sum of one product dy x^T per image (or one over its images side by side, below
    POINTWISE_CONCAT_PIXELS), without the lowered path's batch-minor transposes of x, dy
    and dx. Two threads, batch 8, against them: mobilenet-0.5's pointwise layers 1.2-1.9x
    faster (16 -> 32 at 112x112 4.30 -> 2.25 ms, 32 -> 64 at 56x56 2.58 -> 1.59, 256 ->
    256 at 14x14 2.13 -> 1.76). dw sums each image's terms, then the images in order (the
    lowered path: one GEMM over a chunk of the batch; the same rounding bound)."""
    n, c = x.shape[:2]
    g, mg, cg = w3.shape
    pixels = x[0, 0].size
    xg = x.reshape(n, g, cg, pixels)
    dyg = dy.reshape(n, g, mg, pixels)
    dxg = None if dx is None else dx.reshape(n, g, cg, pixels)
    w3t = w3.transpose(0, 2, 1)

    def work(worker, start, stop):
        ws = workspace(worker)
        if dxg is not None:
            np.matmul(w3t, dyg[start:stop], out=dxg[start:stop])
        dw_part = db_part = None
        if dw is not None and pixels < POINTWISE_CONCAT_PIXELS and stop - start > 1:
            k = stop - start
            dyc = ws.get("pointwise_dy", (g, mg, k, pixels), dy.dtype)
            xc = ws.get("pointwise_x", (g, cg, k, pixels), x.dtype)
            np.copyto(dyc, dyg[start:stop].transpose(1, 2, 0, 3))
            np.copyto(xc, xg[start:stop].transpose(1, 2, 0, 3))
            dw_part = ws.get("pointwise_dw", (g, mg, cg), dw.dtype)
            np.matmul(dyc.reshape(g, mg, -1), xc.reshape(g, cg, -1).transpose(0, 2, 1),
                      out=dw_part)
        elif dw is not None:
            dw_part = ws.get("pointwise_dw", (g, mg, cg), dw.dtype)
            np.matmul(dyg[start], xg[start].transpose(0, 2, 1), out=dw_part)
            if stop - start > 1:
                image = ws.get("pointwise_dw_image", (g, mg, cg), dw.dtype)
                for i in range(start + 1, stop):
                    np.matmul(dyg[i], xg[i].transpose(0, 2, 1), out=image)
                    dw_part += image
        if db is not None:
            db_part = dy[start:stop].sum(axis=(0, 2, 3), dtype=db.dtype)
        return dw_part, db_part

    parts = split_batch(n, work)
    if dw is not None:
        total = parts[0][0]
        for dw_part, _ in parts[1:]:
            total += dw_part
        dw += total.reshape(dw.shape)
    if db is not None:
        for _, db_part in parts:
            db += db_part


def _one_pixel_backward(x2, w2, dy2, dx2, dw, db):
    """The gradients of a 1x1 convolution of one pixel per image (the forward's classifier
    case): an InnerProduct's, each one product over the batch. MobileNet's fc7 (512 ->
    1000) at batch 8, two threads: 2.5 -> 0.3 ms against the lowered path's chunks and
    transposes. BLAS's order of the batch's terms (dw) and the M terms (dx) may differ from
    the lowered path's (the same rounding bound)."""
    if dw is not None:
        if dw.flags.c_contiguous:
            parallel_matmul(dy2.T, x2, dw.reshape(w2.shape), accumulate=True)
        else:
            dw += (dy2.T @ x2).reshape(dw.shape)
    if db is not None:
        db += dy2.sum(axis=0)
    if dx2 is not None:
        parallel_matmul(dy2, w2, dx2)


def _reduce(parts, dw, db):
    """dw += the workers' transposed (g, K, M/g) sums, db += theirs, in worker order."""
    if dw is not None:
        total = parts[0][0]
        for dw_part, _ in parts[1:]:
            total += dw_part
        g, k, mg = total.shape
        view = dw.reshape(g, mg, k)
        if view.flags.c_contiguous and np.shares_memory(view, dw):
            add_transposed(total, view)
        else:                           # a strided dw (the tiled kernel needs a flat one)
            dw += total.transpose(0, 2, 1).reshape(dw.shape)
    if db is not None:
        for _, db_part in parts:
            db += db_part


def deconv2d_forward(x, w, bias, geo, y):
    """Caffe's DeconvolutionLayer forward: y = conv backward-data of x, + bias.

    x (N, M, H, W) plays the convolution's output, y (N, C, OH, OW) its image; the weight is
    (M, C/g, kh, kw) as Caffe's Deconvolution stores it (C = num_output). The bias is added
    after the data gradient's sum, as Caffe does.
    """
    _check(y, w, geo, x)
    if y.size == 0 or x.size == 0:
        y[...] = 0 if bias is None or y.size == 0 else bias[None, :, None, None]
        return y
    n_img, m, h, wd = x.shape
    c, oh, ow = y.shape[1:]
    col_elems = _col_elems(c, m, geo, (oh, ow), (h, wd))
    flip = _data_weight(w, geo, (oh, ow), (h, wd))

    def work(worker, start, stop):
        ws = workspace(worker)
        for s, e in _chunks(start, stop, col_elems, x.itemsize):
            out_t = _to_minor(x[s:e], ws, "out_t")
            in_t = ws.get("in_t", (c, oh, ow, e - s), y.dtype)
            _backward_data(out_t, w, flip, geo, in_t, ws)
            _to_major(in_t, y[s:e], bias)

    split_batch(n_img, work)
    return y


def deconv2d_backward(x, w, dy, geo, dx=None, dw=None, db=None):
    """Gradients of deconv2d_forward: dx OVERWRITTEN, dw and db ACCUMULATED."""
    _check(dy, w, geo, x)
    if dy.size == 0 or x.size == 0:
        if dx is not None:
            dx[...] = 0
        return dx
    n_img, m, h, wd = x.shape
    c, oh, ow = dy.shape[1:]
    g = geo.group
    w3 = _weight3(w, g)
    k = w3.shape[2]
    col_elems = _col_elems(c, m, geo, (oh, ow), (h, wd), False)

    def work(worker, start, stop):
        ws = workspace(worker)
        dw_part = None if dw is None else ws.get("dw_part", (g, k, m // g), dw.dtype)
        db_part = None if db is None else ws.zeros("db_part", (c,), db.dtype)
        for s, e in _chunks(start, stop, col_elems, x.itemsize):
            partial = None if db is None else _bias_partials(dy[s:e].shape, dy.dtype, ws)
            in_t = _to_minor(dy[s:e], ws, "in_t", partial)
            if db is not None:
                bias_grad_from_partials(partial, c, db_part)
            if dw is not None:
                out_t = _to_minor(x[s:e], ws, "out_t")
                _backward_weight(in_t, out_t, geo, dw_part, ws, accumulate=s > start)
            if dx is not None:
                out_t = ws.get("out_t", (m, h, wd, e - s), dx.dtype)
                _forward(in_t, w3, geo, out_t, DENSE, ws)
                _to_major(out_t, dx[s:e])
        return dw_part, db_part

    _reduce(split_batch(n_img, work), dw, db)
    return dx
