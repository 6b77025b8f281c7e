"""Dropout's TRAIN pass in one loop per array (layers/dropout.py draws the uniforms).

mask = (uniform < keep) in the data type, y = (x * mask) * scale: the operations NumPy ran as
four passes with two temporaries, element by element in the same order, so the same bits.
The in-place forms read and write one array: a kernel whose output may alias its input
takes LLVM's scalar loop whenever the two are one buffer.
"""


from .jit import kernel

@kernel(nogil=True)
def dropout_forward(x, uniform, keep, scale, mask, y, in_place):
    one, zero = mask.dtype.type(1), mask.dtype.type(0)
    if in_place:
        for i in range(x.size):
            m = one if uniform[i] < keep else zero
            mask[i] = m
            x[i] = (x[i] * m) * scale
    else:
        for i in range(x.size):
            m = one if uniform[i] < keep else zero
            mask[i] = m
            y[i] = (x[i] * m) * scale


@kernel(nogil=True)
def dropout_backward(dy, mask, scale, dx, in_place):
    if in_place:
        for i in range(dy.size):
            dy[i] = (dy[i] * mask[i]) * scale
    else:
        for i in range(dy.size):
            dx[i] = (dy[i] * mask[i]) * scale
