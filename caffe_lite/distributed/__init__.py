"""Data-parallel training over MPI (the `mpi` extra: mpi4py and MPICH):
`mpiexec -n N caffe-lite train -solver S` runs N ranks with Caffe's multi-GPU semantics.

  launcher.py          is this process a rank of an MPI job (from the environment)?
  job.py               what `train` does differently as a rank (and as a plain process)
  comm.py              the collectives, over mpi4py
  status.py            the per-iteration exchange: failures stop every rank together
  signals.py           SIGINT / SIGHUP as one agreed action, on the same iteration
  state_sync.py        every rank starts from rank 0's solver (snapshots resume at any N)
  sharding.py          each rank reads its own share of the data
  hook.py              the solver hook, once an iteration after backward:
  gradients.py           gradients summed over the ranks and scaled by 1/N, in buckets
  batch_norm_stats.py    BatchNorm statistics combined as iter_size N would hold them
  replica_check.py       debug mode: the replicas are still bit-identical
  rank_logging.py      rank 0 alone logs

docs/distributed.md has the user's side: commands, several machines, measured costs.
"""
import os

from .launcher import import_mpi, launcher_rank, launcher_size, launcher_variable


def training_job(environ=os.environ):
    """The job of this `caffe-lite train`: a plain process, or one rank of an MPI job."""
    from ..errors import CaffeError
    from .job import DataParallelJob, SingleProcessJob
    from .status import RankExit
    size = launcher_size(environ)
    if size is None or size == 1:
        return SingleProcessJob()
    try:
        mpi = import_mpi(environ)
    except CaffeError:
        if launcher_rank(environ) == 0:
            raise
        raise RankExit(1) from None         # rank 0 says what to install, once
    world = mpi.COMM_WORLD.Get_size()
    if world == 1 and size > 1:
        if launcher_rank(environ) != 0:
            raise RankExit(1)
        name, value = launcher_variable(environ)
        raise CaffeError(f"the launcher started {size} ranks ({name}={value}) but MPI sees "
                         "one: mpi4py loads another MPI library than this launcher's (use "
                         "the mpiexec that 'caffe-lite[mpi]' installs, or build mpi4py "
                         "against this MPI)")
    if world == 1:
        return SingleProcessJob()
    return DataParallelJob(mpi)
