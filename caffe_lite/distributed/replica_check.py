"""The debug check that every rank holds the same model: the ranks apply the same averaged
update to the same weights, so the weights, the update history and the BatchNorm statistics
must stay bit-identical. Every `period` iterations (solver `debug_info: true`: every
`display` iterations; CAFFE_LITE_CHECK_REPLICAS=K: every K) each rank hashes each blob and
the ranks compare; the first blob that differs stops the job with one line naming it.
"""
import hashlib
import os

from .status import JobFailed

ENV_PERIOD = "CAFFE_LITE_CHECK_REPLICAS"


def check_period(solver_param, environ=os.environ):
    """Iterations between two checks; 0: never."""
    text = environ.get(ENV_PERIOD, "").strip()
    if text:
        if not text.isdigit():
            from ..errors import CaffeError
            raise CaffeError(f"{ENV_PERIOD} must be a whole number of iterations, got "
                             f"'{text}'")
        return int(text)
    if solver_param.debug_info:
        return solver_param.display or 1
    return 0


def digests(arrays):
    return [hashlib.blake2b(a.tobytes(), digest_size=8).hexdigest() for a in arrays]


class ReplicaCheck:
    def __init__(self, comm, solver, period):
        self.comm, self.period = comm, period
        net = solver.net
        names = [f"{net.layer_names[layer]}[{blob}]"
                 for layer, blob in net.learnable_param_owners]
        # (name, the array now): a blob's data is read at each check, never kept
        self.blobs = [(name, lambda b=b: b.data) for name, b in zip(names, net.learnable_params)]
        count = len(names)
        self.blobs += [(f"{names[i % count]} history {i // count}", lambda h=h: h)
                       for i, h in enumerate(solver.history)]

    def due(self, it):
        return self.period > 0 and it % self.period == 0

    def check(self, it):
        mine = digests([array() for _, array in self.blobs])
        every = self.comm.allgather_object(mine)
        for rank, theirs in enumerate(every[1:], start=1):
            for (name, _), a, b in zip(self.blobs, every[0], theirs):
                if a != b:
                    raise JobFailed(rank, self.comm.size,
                                    f"its {name} differs from rank 0's at iteration {it} "
                                    "(the replicas are no longer identical)")
