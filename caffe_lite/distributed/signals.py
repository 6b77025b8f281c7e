"""SIGINT and SIGHUP for a whole job: every rank acts on the same iteration, once a signal.

Caffe's effects (-sigint_effect, -sighup_effect: snapshot, stop or none) apply, but not
where the signal happens to land: each rank counts the signals it gets, the ranks compare
their counts at every iteration's status exchange (status.py), and the job acts when the
highest count of a signal goes up. So a signal that reaches every rank, even on different
iterations (mpiexec forwarding Ctrl-C, `pkill -HUP -f 'caffe-lite train'`), is one request,
and so is one sent to rank 0 alone. Only rank 0 writes snapshots: a snapshot request does
nothing on the others, a stop stops them all after the same iteration.

MPICH's mpiexec (hydra) forwards SIGINT, SIGTERM and SIGUSR1 to the ranks but dies on SIGHUP
without forwarding it (its ranks are killed), so under MPI SIGUSR1 counts as SIGHUP: send it
to mpiexec, or SIGHUP to the ranks. Open MPI's mpirun turns SIGINT and SIGHUP into SIGTERM
and then kills the ranks: there only the last snapshot is left (docs/distributed.md).
"""
import signal
import threading

from ..solvers.signals import check_effect

NONE, SNAPSHOT = "none", "snapshot"
_KIND = {"SIGINT": 0, "SIGHUP": 1, "SIGUSR1": 1}


class CountingSignalHandler:
    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.effects = (check_effect(sigint_effect, "sigint_effect"),
                        check_effect(sighup_effect, "sighup_effect"))
        self.counts = [0, 0]
        self._old = {}

    def _handle(self, signum, frame):
        self.counts[_KIND[signal.Signals(signum).name]] += 1

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in _KIND:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old.clear()
        return False


class AgreedAction:
    """The solver's action function (Solver.set_action_function) for one rank: the effect
    the job agreed on at this iteration's status exchange, given once."""

    def __init__(self, handler, is_root):
        self.handler = handler
        self.is_root = is_root
        self.acted = [0, 0]
        self.pending = NONE

    def local_counts(self):
        return tuple(self.handler.counts)

    def agree(self, highest):
        """Set the pending effect from the job's highest counts; SIGINT first, as Caffe's
        handler, a SIGHUP that came with it at the next exchange."""
        for kind, effect in enumerate(self.handler.effects):
            if highest[kind] > self.acted[kind]:
                self.acted[kind] = highest[kind]
                self.pending = effect
                return

    def __call__(self):
        action, self.pending = self.pending, NONE
        if action == SNAPSHOT and not self.is_root:
            return NONE
        return action
