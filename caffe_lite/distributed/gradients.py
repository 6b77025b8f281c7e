"""Gradient averaging over the ranks: Caffe's multi-GPU rule (P2PSync / NCCL
on_gradients_ready). Each rank's accumulated gradients are summed over the ranks and scaled
by 1/N; the solver then normalises by iter_size and updates as usual, so N ranks with batch
B and iter_size I update exactly as one process with batch B and iter_size N * I (up to the
order of the float32 sums), and the learning rate means what it means in `caffe train -gpu
0,...,N-1`.

Buckets, last layer first (the order backward finishes them): a blob of FUSE_BELOW bytes or
more is reduced in place, alone; the smaller ones (biases, BatchNorm scales, small
convolutions) are packed into flat buffers of at most `bucket_bytes`, one allreduce each.
Copying a blob in and out costs about 2 x bytes / memory bandwidth, a call of its own one
message latency (tens of microseconds on Ethernet): packing pays below about 64 KiB. The
exchange runs after the whole backward, not overlapped with it: docs/distributed.md has the
measurements behind that choice.
"""
import numpy as np

DEFAULT_BUCKET_BYTES = 16 << 20
FUSE_BELOW = 64 << 10


def plan_buckets(sizes, bucket_bytes):
    """Split blobs of `sizes` bytes, in order, into runs of at most `bucket_bytes` (a bigger
    blob is a bucket of its own); returns lists of indices."""
    buckets, current, filled = [], [], 0
    for i, size in enumerate(sizes):
        if current and filled + size > bucket_bytes:
            buckets.append(current)
            current, filled = [], 0
        current.append(i)
        filled += size
    if current:
        buckets.append(current)
    return buckets


class _InPlace:
    """One big blob, reduced where it lies."""

    def __init__(self, param):
        self.params = [param]

    def average(self, comm):
        diff = self.params[0].diff
        comm.allreduce_sum(diff)
        dt = diff.dtype.type
        diff *= dt(1) / dt(comm.size)


class _Packed:
    """Small blobs, reduced together in one flat buffer."""

    def __init__(self, params):
        self.params = params
        self.buffer = np.empty(sum(p.diff.size for p in params), params[0].diff.dtype)
        ends = np.cumsum([p.diff.size for p in params])
        self.slices = [slice(int(e - p.diff.size), int(e)) for p, e in zip(params, ends)]

    def average(self, comm):
        for p, s in zip(self.params, self.slices):
            self.buffer[s] = p.diff.reshape(-1)
        comm.allreduce_sum(self.buffer)
        dt = self.buffer.dtype.type
        scale = dt(1) / dt(comm.size)
        for p, s in zip(self.params, self.slices):
            np.multiply(self.buffer[s].reshape(p.diff.shape), scale, out=p.diff)


class GradientAverager:
    def __init__(self, comm, params, bucket_bytes=DEFAULT_BUCKET_BYTES,
                 fuse_below=FUSE_BELOW):
        self.comm = comm
        backward_order = list(reversed(params))
        self.buckets = [_InPlace(p) for p in backward_order
                        if p.diff.nbytes >= fuse_below and p.diff.flags.c_contiguous]
        alone = {id(b.params[0]) for b in self.buckets}
        small = [p for p in backward_order if id(p) not in alone]
        # one dtype per buffer (a float64 net's blobs are all float64; mixed nets are rare)
        for dtype in sorted({p.diff.dtype.str for p in small}):
            same = [p for p in small if p.diff.dtype.str == dtype]
            for indices in plan_buckets([p.diff.nbytes for p in same], bucket_bytes):
                self.buckets.append(_Packed([same[i] for i in indices]))
        self.nbytes = sum(p.diff.nbytes for p in params)

    def average(self):
        """Every param's diff <- the mean over the ranks of their diffs."""
        for bucket in self.buckets:
            bucket.average(self.comm)
