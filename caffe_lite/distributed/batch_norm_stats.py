"""BatchNorm's running statistics over the ranks.

Caffe's multi-GPU solvers keep them per GPU, and test and save the first solver's. Here the
BVLC layer's statistics become what one process with iter_size N would hold, the same on
every rank:

  BVLC BatchNorm updates each statistics blob s (mean, variance and the moving-average
  factor) as s <- a s + x, a = moving_average_fraction, x from the batch; one process with
  iter_size I does so once per pass. Rank r starts the iteration from the same s as every
  rank and ends it with s_r = a^I s + d_r, d_r = sum_i a^(I-1-i) x_(r,i). The job combines

      s <- a^(N I) s + sum_r a^(I (N-1-r)) d_r

  the single process's result for the batches taken rank after rank (rank 0's I batches,
  then rank 1's, ...). With iter_size 1 that is the round-robin order the ranks read in
  (layers/base_data.py: set_share), so N ranks hold what one process with iter_size N holds.
  The sums run in float64 and are rounded to the blob's type once.

NVCaffe's forms copy the batch statistics on their first passes (caffe-jacinto 0.15 also
clips the variance): not of that form, they take rank 0's statistics, Caffe's rule. A layer
that uses its global statistics in TRAIN never changes them and is left alone.
"""
import numpy as np

from ..layers.batch_norm import BatchNormLayer


def rank_contribution(before, after, fraction, passes, rank, size):
    """a^(I (N-1-r)) d_r of rank r (module docstring), float64."""
    a = np.asarray(fraction, np.float64)
    d = np.asarray(after, np.float64) - a ** passes * np.asarray(before, np.float64)
    return a ** (passes * (size - 1 - rank)) * d


def combined(before, total, fraction, passes, size):
    """a^(N I) s + the sum of the ranks' contributions."""
    a = np.asarray(fraction, np.float64)
    return a ** (passes * size) * np.asarray(before, np.float64) + total


class BatchNormStatistics:
    def __init__(self, comm, net, iter_size):
        self.comm, self.passes = comm, int(iter_size)
        self.averaged, self.from_root, fractions = [], [], []
        for layer in net.layers:
            if not isinstance(layer, BatchNormLayer) or layer.use_global_stats:
                continue
            stats = [layer.blobs[i] for i in sorted(layer.state_blobs)]
            if layer.layout == "bvlc":
                self.averaged += stats
                fractions += [np.full(b.count, layer.maf, np.float64) for b in stats]
            else:
                self.from_root += stats
        self.fraction = np.concatenate(fractions) if fractions else np.zeros(0)
        self.before = self._flat()

    def __bool__(self):
        return bool(self.averaged or self.from_root)

    def _flat(self):
        if not self.averaged:
            return np.zeros(0)
        return np.concatenate([b.data.reshape(-1).astype(np.float64) for b in self.averaged])

    def combine(self):
        """Every rank's statistics <- the job's (module docstring)."""
        if self.from_root:
            # one broadcast for all of them: a call each would cost a latency each
            flat = np.concatenate([b.data.reshape(-1) for b in self.from_root])
            self.comm.bcast_array(flat)
            _unflatten(flat, self.from_root)
        if not self.averaged:
            return
        total = rank_contribution(self.before, self._flat(), self.fraction, self.passes,
                                  self.comm.rank, self.comm.size)
        self.comm.allreduce_sum(total)
        _unflatten(combined(self.before, total, self.fraction, self.passes, self.comm.size),
                   self.averaged)
        self.before = self._flat()


def _unflatten(flat, blobs):
    """Each blob's data <- its run of `flat`, in the blob's type."""
    start = 0
    for blob in blobs:
        blob.data[...] = flat[start:start + blob.count].reshape(blob.data.shape)
        start += blob.count
