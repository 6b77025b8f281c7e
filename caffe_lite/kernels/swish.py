"""Swish and the sigmoid it is built on, rounded as Caffe's C++ rounds them."""
import numpy as np


def sigmoid(x, out):
    """Caffe's sigmoid: 0.5 * tanh(0.5 * x) + 0.5, evaluated in double (the constants are
    double literals) and rounded once to the output dtype."""
    z = x.astype(np.float64)
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    np.copyto(out, z, casting="unsafe")


def swish_forward(x, beta, sig, out):
    """sig = sigmoid(beta * x) (beta * x rounded to the dtype first, caffe_scal);
    out = x * sig."""
    sigmoid(x * x.dtype.type(beta), sig)
    np.multiply(x, sig, out=out)


def swish_backward(y, dy, sig, beta, out):
    """out = dy * (beta*y + sig * (1 - beta*y)).

    Caffe writes `1. - beta * swish_x`: beta * y is a Dtype product, everything after
    the double literal is double, and the result is rounded once on assignment.
    """
    by = (y * y.dtype.type(beta)).astype(np.float64)
    inner = 1.0 - by
    inner *= sig
    inner += by
    inner *= dy
    np.copyto(out, inner, casting="unsafe")
