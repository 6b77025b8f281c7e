"""A strided convolution as a stride-1 one over the stride's phases, on the tiles of
kernels/blocked_conv.py.

With stride (sh, sw), output (oy, ox) reads the padded image at (oy*sh + ki, ox*sw + kj).
Split the padded image into its sh*sw phases, phase (a, b) holding the pixels
(r*sh + a, q*sw + b) at (r, q), and write each tap ki = i*sh + a, kj = j*sw + b: the tap
reads phase (a, b) at (oy + i, ox + j). So

    y = conv_stride1(phases, w')      phases: C*sh*sw channels, ordered (c, a, b)
                                      w'[m, (c, a, b), i, j] = w[m, c, i*sh + a, j*sw + b]
                                      (zero where i*sh + a >= kh or j*sw + b >= kw)

with a ceil(kh/sh) x ceil(kw/sw) kernel and no padding (the phases hold it). The zero taps
are work the tiles do for nothing: ceil(kh/sh)*sh * ceil(kw/sw)*sw / (kh*kw) of the
useful, 1.19 for CaffeNet's conv1 (11x11, stride 4), 1.78 for a 3x3 filter at stride 2.
`applies` takes layers where that is at most MAX_WASTE and the tiles apply to the phases.
Measured two threads, forward, against what ran before (direct loops at batch 1, else the
lowered GEMM): CaffeNet's conv1 (3 -> 96, 11x11, stride 4, 227x227) 1.53 / 2.31 ms at
batch 1 and 5.0 / 6.4 at 4; a 7x7 stride-2 first layer (3 -> 64, 224x224) 1.54 / 2.39 at 1
and 12.4 / 21.6 at 8; 64 -> 128 channels 5x5 at stride 2 on 56x56, 2.95 / 4.02 at 1.

The phases and w' are NumPy copies made per call: the image once more (CaffeNet's conv1,
155 K floats an image) and a weight of zeros and w's values (42 K floats), small next to
the convolution. Sums run over the taps in (c, a, b, i, j) order instead of Caffe's
(c, ki, kj), one FMA each; a zero tap adds an exact zero, except on an infinite or NaN
pixel (0 * inf is NaN where Caffe's sum skips the product). Equal to the lowered
convolution to float32 rounding.
"""
import numpy as np

from . import blocked_conv
from .conv import ConvGeometry
from .vector_tile import LANES

#: most work on the phases, relative to the filter's own taps (module docstring)
MAX_WASTE = 1.5


def _phase_geometry(geo):
    """The stride-1 geometry over the phases, or None where this does not apply."""
    if geo.dilation_h != 1 or geo.dilation_w != 1 or (geo.stride_h, geo.stride_w) == (1, 1):
        return None
    kh = -(-geo.kernel_h // geo.stride_h)
    kw = -(-geo.kernel_w // geo.stride_w)
    return ConvGeometry(kh, kw, 0, 0, 1, 1, 1, 1, geo.group)


def applies(x, geo, outputs):
    """Whether y = conv(x, w) with `outputs` channels runs here (module docstring): batches
    of fewer than LANES images, which the tiles run image by image. Larger batches keep
    the lowered GEMM, whose lowering is then a small part: measured two threads, batch 16,
    lowered against phases, CaffeNet's conv1 23.6 / 25.0 ms and 64 -> 128 channels 5x5 at
    stride 2 on 28x28, 6.5 / 10.0 ms (its phases do 1.44x the work)."""
    pgeo = _phase_geometry(geo)
    if pgeo is None or x.dtype != np.float32 or x.size == 0 or x.shape[0] >= LANES:
        return False
    phases = geo.stride_h * geo.stride_w
    waste = pgeo.kernel_h * pgeo.kernel_w * phases / (geo.kernel_h * geo.kernel_w)
    if waste > MAX_WASTE:
        return False
    n, c, h, w = x.shape
    oh, ow = geo.output_shape(h, w)
    shape = (n, c * phases, oh + pgeo.kernel_h - 1, ow + pgeo.kernel_w - 1)
    # the phases' shape as a zero-stride array: what blocked_conv.applies reads of them
    return blocked_conv.applies(np.broadcast_to(np.float32(0), shape), pgeo, outputs)


def phases(x, geo, pgeo, out_hw):
    """The padded image's phases (N, C*sh*sw, OH + kh' - 1, OW + kw' - 1), channels ordered
    (c, a, b); zeros past the padded image."""
    n, c, h, w = x.shape
    sh, sw = geo.stride_h, geo.stride_w
    hq, wq = out_hw[0] + pgeo.kernel_h - 1, out_hw[1] + pgeo.kernel_w - 1
    padded = np.zeros((n, c, hq * sh, wq * sw), np.float32)
    rows = min(h, hq * sh - geo.pad_h)
    cols = min(w, wq * sw - geo.pad_w)
    padded[:, :, geo.pad_h:geo.pad_h + rows, geo.pad_w:geo.pad_w + cols] = x[:, :, :rows, :cols]
    return _split(padded, sh, sw)


def phase_weight(w, geo, pgeo):
    """w' (M, C/g*sh*sw, kh', kw') of the module docstring."""
    m, cg, kh, kw = w.shape
    padded = np.zeros((m, cg, pgeo.kernel_h * geo.stride_h, pgeo.kernel_w * geo.stride_w),
                      np.float32)
    padded[:, :, :kh, :kw] = w
    return _split(padded, geo.stride_h, geo.stride_w)


def _split(padded, sh, sw):
    """(A, B, hq*sh, wq*sw) -> (A, B*sh*sw, hq, wq): element (r*sh + a, q*sw + b) of plane
    B goes to (r, q) of plane (B, a, b); the one split both the image and the weight use."""
    n, c, hs, ws = padded.shape
    hq, wq = hs // sh, ws // sw
    split = padded.reshape(n, c, hq, sh, wq, sw).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(split).reshape(n, c * sh * sw, hq, wq)


def phase_conv_forward(x, w, bias, geo, y):
    """y (N, M, OH, OW) = conv(x, w) + bias (or None), strided, on the tiles (`applies`)."""
    pgeo = _phase_geometry(geo)
    xs = phases(x, geo, pgeo, y.shape[2:])
    blocked_conv.blocked_conv_forward(xs, phase_weight(w, geo, pgeo), bias, pgeo, y)
    return y
