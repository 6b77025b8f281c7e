"""Softmax kernels (Caffe's softmax_layer.cpp, softmax_loss_layer.cpp), dtype-generic.

Arrays are viewed as (outer, channels, inner); the softmax runs over the middle axis:
  y = exp(x - max_c x) / sum_c exp(x - max_c x)
  dx = (dy - sum_c(dy * y)) * y
Loss (per (i, j) with a non-ignored label l = int(label)):
  loss = -sum log(max(prob[i, l, j], FLT_MIN));  d x = prob - onehot(l)  (0 where ignored)
"""
import numpy as np

from .jit import kernel
from .neuron import split_range

FLT_MIN = 1.1754943508222875e-38


@kernel(nogil=True)
def _softmax_forward(x, top, lo, hi):
    outer, channels, inner = x.shape
    for task in range(lo, hi):
        i = task // inner
        k = task % inner
        m = x[i, 0, k]
        for j in range(channels):
            v = x[i, j, k]
            if m < v:
                m = v
        s = x.dtype.type(0)
        for j in range(channels):
            e = np.exp(x[i, j, k] - m)
            top[i, j, k] = e
            s += e
        for j in range(channels):
            top[i, j, k] = top[i, j, k] / s


def softmax_forward(x, top):
    """(outer, channels, inner) arrays; the (outer, inner) columns run over threads."""
    split_range(_softmax_forward, x.shape[0] * x.shape[2], 3 * x.size, x, top)


@kernel(nogil=True)
def _softmax_backward(top, top_diff, bottom_diff, lo, hi):
    outer, channels, inner = top.shape
    for task in range(lo, hi):
        i = task // inner
        k = task % inner
        dot = top.dtype.type(0)
        for j in range(channels):
            dot += top_diff[i, j, k] * top[i, j, k]
        for j in range(channels):
            bottom_diff[i, j, k] = (top_diff[i, j, k] - dot) * top[i, j, k]


def softmax_backward(top, top_diff, bottom_diff):
    split_range(_softmax_backward, top.shape[0] * top.shape[2], 3 * top.size, top, top_diff,
                bottom_diff)


@kernel
def softmax_loss_forward(prob, label, has_ignore, ignore_label):
    """Returns (loss, count): the summed -log prob of the labels and how many counted."""
    outer, channels, inner = prob.shape
    loss = prob.dtype.type(0)
    tiny = prob.dtype.type(FLT_MIN)
    count = 0
    for i in range(outer):
        for j in range(inner):
            lab = int(label[i, j])
            if has_ignore and lab == ignore_label:
                continue
            p = prob[i, lab, j]
            if p < tiny:
                p = tiny
            loss -= np.log(p)
            count += 1
    return loss, count


@kernel
def softmax_loss_backward(prob, label, has_ignore, ignore_label, scale, bottom_diff):
    """bottom_diff = scale * (prob - onehot(label)), zero for ignored positions."""
    outer, channels, inner = prob.shape
    zero = prob.dtype.type(0)
    one = prob.dtype.type(1)
    for task in range(outer * inner):
        i = task // inner
        j = task % inner
        lab = int(label[i, j])
        if has_ignore and lab == ignore_label:
            for c in range(channels):
                bottom_diff[i, c, j] = zero
        else:
            for c in range(channels):
                v = prob[i, c, j]
                if c == lab:
                    v = v - one
                bottom_diff[i, c, j] = v * scale
