"""The solver hook of a data-parallel run (solvers/hooks.py: gradients_ready): once an
iteration, after the backward passes, every rank
  1. exchanges its status (status.py): a failed rank stops the job here, and the signals
     counted so far become one agreed action (signals.py);
  2. averages the gradients over the ranks (gradients.py);
  3. combines the BatchNorm statistics (batch_norm_stats.py), which this iteration's
     forward passes changed on each rank;
  4. every `period` iterations in debug mode, checks that the replicas are identical
     (replica_check.py): weights and history as the last update left them, statistics as
     just combined.
The solver then clips, normalises, regularises and updates as in one process.
"""
from ..solvers.hooks import ParamHook
from .batch_norm_stats import BatchNormStatistics
from .gradients import GradientAverager
from .replica_check import ReplicaCheck


class DataParallelHook(ParamHook):
    def __init__(self, comm, status, action, solver, bucket_bytes, check_period):
        self.comm, self.status, self.action = comm, status, action
        self.averager = GradientAverager(comm, solver.params, bucket_bytes)
        self.statistics = BatchNormStatistics(comm, solver.net, solver.param.iter_size)
        self.check = ReplicaCheck(comm, solver, check_period)

    def gradients_ready(self, params, it):
        self.action.agree(self.status.exchange(self.action.local_counts()))
        with self.comm.sequence():
            self.averager.average()
            self.statistics.combine()
        if self.check.due(it):
            self.check.check(it)
