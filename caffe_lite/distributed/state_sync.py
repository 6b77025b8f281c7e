"""Every rank starts from rank 0's solver: weights (BatchNorm statistics and other state
blobs included), update history, iteration, global RNG, data positions and hook state.

Only rank 0 reads -snapshot and -weights files (and the solver's `weights`), so a snapshot
taken by any number of ranks, or by one process, resumes on any number, and the other
machines need no copy of it. The data positions are the stream's (layers/base_data.py), the
same whatever the rank count, so a run resumed on M ranks goes on with the batches that the
N ranks that saved it would have read next, N * iter_size batches an iteration before and
M * iter_size' after (docs/distributed.md: keep the effective batch when N changes).

The global RNG is rank 0's on every rank and stays so: the forks' random choices that
change weights and masks (DNS surgery's draws, caffe-jacinto's stochastic rounding) must
agree for the replicas to stay identical. So Dropout draws the same masks on every rank
(over different images); Caffe seeds each GPU's solver apart.
"""
from ..solvers.snapshot import apply_resume_state, resume_state


def broadcast_solver_state(comm, solver):
    state = None
    if comm.is_root:
        state = {"iter": solver.iter, "current_step": solver.current_step,
                 "resume": resume_state(solver)}
    with comm.sequence():
        state = comm.bcast_object(state)
        for blob in solver.net.learnable_params:
            comm.bcast_array(blob.data)
        for history in solver.history:
            comm.bcast_array(history)
    if not comm.is_root:
        solver.iter = state["iter"]
        solver.current_step = state["current_step"]
        apply_resume_state(solver, state["resume"])
