"""GEMM helpers over NumPy's BLAS, and the scratch workspace the lowered layers share.

NumPy's matmul has no beta, so C += A @ B (Caffe's gemm with beta 1, how parameter
gradients accumulate) goes through a scratch product and an add; the add is a small
fraction of the product. SciPy's BLAS has beta, but it links a second OpenBLAS whose thread
pool fights NumPy's for the cores (measured 10x slower when the two alternate).
"""
import numpy as np


class Workspace:
    """Grow-only scratch buffers, one per (name, dtype); a net runs one layer at a time."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype)
            self._buffers[(name, dtype)] = buf
        return buf[:size].reshape(shape)

    def release(self):
        self._buffers.clear()

    @property
    def nbytes(self):
        return sum(b.nbytes for b in self._buffers.values())


WORKSPACE = Workspace()


def matmul_acc(a, b, out, ws=WORKSPACE):
    """out += a @ b (a, b may be transposed views; stacked operands allowed)."""
    part = ws.get("matmul_acc", out.shape, out.dtype)
    np.matmul(a, b, out=part)
    out += part
    return out
