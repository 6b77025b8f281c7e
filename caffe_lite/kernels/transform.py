"""Caffe's DataTransformer arithmetic for a whole batch: crop, mirror, mean, scale."""
import numpy as np


from .jit import kernel

# nogil: the prefetch thread runs this while the main thread trains. Not parallel:
# Numba's default workqueue layer must not be entered from two threads at once.
@kernel(nogil=True)
def transform_batch(src, h_off, w_off, mirror, mean, scale, out):
    """out[n, c, h, w'] = (src[n, c, h_off+h, w_off+w] - mean[c, h_off+h, w_off+w]) * scale,
    with w' = W-1-w when mirror[n]. The mean is indexed at the source position, as Caffe does
    for a mean_file (a per-channel mean_value is a constant plane, so it agrees there too)."""
    n_items, channels, out_h, out_w = out.shape
    for n in range(n_items):
        ho = h_off[n]
        wo = w_off[n]
        flip = mirror[n]
        for c in range(channels):
            for h in range(out_h):
                for w in range(out_w):
                    v = (np.float32(src[n, c, ho + h, wo + w]) - mean[c, ho + h, wo + w]) * scale
                    if flip:
                        out[n, c, h, out_w - 1 - w] = v
                    else:
                        out[n, c, h, w] = v
