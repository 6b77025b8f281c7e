"""How the ranks of a job agree that all is well, and stop together when it is not.

At points that every rank reaches in the same order (once set up, before any state is sent;
once an iteration, when its gradients are ready and before they are averaged; once training
is over) the ranks exchange a small record: the signals each has counted (signals.py) and,
for a rank that failed since the last point, its error. A rank that raises anywhere else
(reading data, forward or backward, a test or a snapshot on rank 0) takes its error to the
next point instead of its work. The others are waiting there, so every rank learns of it at
the same point: rank 0 prints one line naming the failed rank and the reason, and every rank
exits with status 1 (130 after an interrupt), with no launcher abort.

A rank that fails in the middle of the gradient exchange (Communicator.busy) cannot take its
error to the next point: it prints that line itself and leaves at once, and the launcher
stops the others. A rank killed outright (SIGKILL, the OOM killer, a lost machine) is the
launcher's to report: mpiexec stops the other ranks within seconds and names the process.
"""
import os
import sys
import traceback

from ..errors import CaffeError


class JobFailed(CaffeError):
    """Raised on every rank at the same point: a rank failed (`failed_rank`, `reason`)."""

    def __init__(self, failed_rank, size, reason, interrupted=False):
        self.failed_rank, self.reason, self.interrupted = failed_rank, reason, interrupted
        # rank 0's own failures read as they do in a single process
        where = f"rank {failed_rank} of {size}: " if failed_rank else ""
        super().__init__(where + reason)


class RankExit(Exception):
    """This rank ends quietly with `code`: rank 0 reports for the job."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def describe(err):
    """(reason, interrupted) of an exception, worded as the command's one error line."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", True
    if isinstance(err, (CaffeError, OSError, MemoryError)):
        return str(err), False
    detail = str(err).replace("\n", " ")
    return (f"internal error: {type(err).__name__}: {detail} (set CAFFE_LITE_TRACEBACK=1 for "
            "the traceback)"), False


class JobStatus:
    def __init__(self, comm):
        self.comm = comm

    def exchange(self, counts=(0, 0), failure=None):
        """Every rank's (failure, signal counts); raises JobFailed if any rank failed, else
        returns the highest count of each signal."""
        records = self.comm.allgather_object((failure, tuple(counts)))
        for rank, (failed, _) in enumerate(records):
            if failed is not None:
                reason, interrupted = failed
                raise JobFailed(rank, self.comm.size, reason, interrupted)
        return [max(c[kind] for _, c in records) for kind in range(2)]

    def fail(self, err):
        """This rank raised `err` between two points: tell the others at the next one, or,
        in the middle of an exchange, print the line and leave (module docstring)."""
        if isinstance(err, JobFailed):
            raise err
        if os.environ.get("CAFFE_LITE_TRACEBACK"):
            traceback.print_exception(err, file=sys.stderr)
        reason, interrupted = describe(err)
        if self.comm.busy:
            sys.stderr.write(f"caffe-lite train: error: rank {self.comm.rank} of "
                             f"{self.comm.size}: {reason}\n")
            sys.stderr.flush()
            os._exit(130 if interrupted else 1)
        self.exchange(failure=(reason, interrupted))
        # not reached: the exchange raises for the failure this rank has just reported
        raise JobFailed(self.comm.rank, self.comm.size, reason, interrupted)
