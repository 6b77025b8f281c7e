"""What `caffe-lite train` does differently as one rank of an MPI job (DataParallelJob) and
as a plain process (SingleProcessJob, which changes nothing): the train command asks its job
at each step where they differ.
"""
import contextlib
import os
import socket

from ..errors import CaffeError
from ..log import LOG
from .comm import Communicator
from .gradients import DEFAULT_BUCKET_BYTES
from .hook import DataParallelHook
from .rank_logging import rank_logging
from .replica_check import check_period
from .sharding import share_training_data
from .signals import AgreedAction, CountingSignalHandler
from .state_sync import broadcast_solver_state
from .status import JobFailed, JobStatus

ENV_BUCKET_MB = "CAFFE_LITE_ALLREDUCE_BUCKET_MB"


class SingleProcessJob:
    def run(self, body):
        return body()

    def prepare_param(self, param):
        pass

    def compile_ahead(self, param, solver_path):
        from ..compile_ahead import start
        return start(param, solver_path)

    def signal_handler(self, sigint_effect, sighup_effect):
        from ..solvers.signals import SignalHandler
        return SignalHandler(sigint_effect, sighup_effect)

    def action_function(self, handler):
        return handler.get_action

    def restore(self, solver, path):
        solver.restore(path)

    def load_weights(self, solver, weights):
        solver.load_weights(weights)

    def start(self, solver):
        pass

    def progress_stream(self, stream):
        return stream


class DataParallelJob:
    def __init__(self, mpi):
        self.comm = Communicator(mpi, mpi.COMM_WORLD)
        self.status = JobStatus(self.comm)
        self.action = None

    # --- the run, and how it ends -----------------------------------------------------------
    def run(self, body):
        """body() on every rank; a failure anywhere stops every rank together (status.py)."""
        from ..cli import HelpRequested
        with rank_logging(self.comm.rank), self._threads():
            try:
                code = body()
                self.status.exchange()          # the last point: training is over everywhere
                return code
            except HelpRequested:
                # from the flags, the same on every rank: rank 0 prints the help
                if self.comm.is_root:
                    raise
                return 0
            except BaseException as err:    # an interrupt too: the others must hear of it
                return self._stopped(err)

    def _stopped(self, err):
        try:
            self.status.fail(err)
        except JobFailed as failed:
            if not self.comm.is_root:
                return 130 if failed.interrupted else 1
            if failed.interrupted:
                raise KeyboardInterrupt from None
            raise failed from None

    @contextlib.contextmanager
    def _threads(self):
        """Without CAFFE_LITE_NUM_THREADS, the ranks on one machine split its cores."""
        from .. import threads
        local = self.comm.ranks_on_this_host()
        if os.environ.get(threads.ENV_NUM_THREADS, "").strip() or local == 1:
            yield
            return
        before = threads.get_num_threads()
        threads.set_num_threads(max(1, before // local))
        try:
            yield
        finally:
            threads.set_num_threads(before)

    # --- the steps of `train` -----------------------------------------------------------------
    def compile_ahead(self, param, solver_path):
        return None     # the ranks already fill every core

    def prepare_param(self, param):
        """Rank 0 alone tests and snapshots, and reads the weights files (state_sync.py)."""
        if self.comm.is_root:
            return
        for name in ("test_iter", "test_net", "test_net_param", "test_state", "weights"):
            param.ClearField(name)
        param.test_interval = 0
        param.snapshot = 0
        param.snapshot_after_train = False

    def signal_handler(self, sigint_effect, sighup_effect):
        handler = CountingSignalHandler(sigint_effect, sighup_effect)
        self.action = AgreedAction(handler, self.comm.is_root)
        return handler

    def action_function(self, handler):
        return self.action

    def restore(self, solver, path):
        if self.comm.is_root:
            solver.restore(path)

    def load_weights(self, solver, weights):
        if self.comm.is_root:
            solver.load_weights(weights)

    def start(self, solver):
        """Once every rank has built its solver: rank 0's state everywhere, each rank's
        data share, and the hook that averages the gradients."""
        bucket_bytes, period = _bucket_bytes(), check_period(solver.param)
        self.status.exchange(self.action.local_counts())
        broadcast_solver_state(self.comm, solver)
        share_training_data(solver.net, self.comm.rank, self.comm.size)
        hook = DataParallelHook(self.comm, self.status, self.action, solver, bucket_bytes,
                                period)
        solver.add_hook(hook)
        with self.comm.sequence():
            places = self.comm.allgather_object((socket.gethostname(), os.getpid()))
        self._log_start(solver, hook, places)

    def progress_stream(self, stream):
        return stream if self.comm.is_root else None

    def _log_start(self, solver, hook, places):
        from .. import threads
        # mpiexec names a process that dies by its pid and host: this line maps it to a rank
        LOG.info("Ranks (host:pid): %s", ", ".join(
            f"{rank} = {host}:{pid}" for rank, (host, pid) in enumerate(places)))
        averager = hook.averager
        count = sum(p.diff.size for p in solver.params)
        LOG.info("Data-parallel training on %d ranks (%d thread(s) each on this machine): "
                 "iter_size %d, so %d batches per update", self.comm.size,
                 threads.get_num_threads(), solver.param.iter_size,
                 self.comm.size * solver.param.iter_size)
        LOG.info("Gradients of %d values (%.2f MiB) averaged in %d allreduce(s) per "
                 "iteration", count, averager.nbytes / 2**20, len(averager.buckets))
        if hook.statistics:
            LOG.info("BatchNorm statistics combined over the ranks (docs/distributed.md)")


def _bucket_bytes():
    text = os.environ.get(ENV_BUCKET_MB, "").strip()
    if not text:
        return DEFAULT_BUCKET_BYTES
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value < 0:
        raise CaffeError(f"{ENV_BUCKET_MB} must be a size in MiB >= 0, got '{text}'")
    return int(value * 2**20)
