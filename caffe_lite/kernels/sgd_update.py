"""SGD's whole update of one param in one pass over its arrays (solvers/sgd.py uses it when
no hook, override or L1 penalty is in the way).

Caffe's steps, each a pass over the param: diff += local_decay * data (Regularize, L2),
history = momentum * history + local_rate * diff, diff = history (ComputeUpdateValue),
data -= diff (Update). Fused, each element goes through the same float operations in the
same order, so the result is the same bits, and the arrays are read once instead of
five times, with no temporaries.
"""


from .jit import kernel

@kernel(nogil=True)
def sgd_update(data, diff, history, local_decay, momentum, local_rate, decay):
    """The update above over flat arrays; `decay` False skips Regularize (local_decay 0:
    Caffe skips it, and 0 * inf would be NaN)."""
    for i in range(data.size):
        g = diff[i] + local_decay * data[i] if decay else diff[i]
        v = momentum * history[i] + local_rate * g
        history[i] = v
        diff[i] = v
        data[i] = data[i] - v
