"""The parts of data-parallel training that need no MPI: BatchNorm statistics combination,
gradient buckets, launcher detection, agreed signals, failure reports, the replica check,
and the one-line hint when mpi4py is missing."""
import contextlib

import numpy as np
import pytest

from caffe_lite.distributed.batch_norm_stats import combined, rank_contribution
from caffe_lite.distributed.gradients import GradientAverager, plan_buckets
from caffe_lite.distributed.launcher import UNKNOWN, launcher_size
from caffe_lite.distributed.replica_check import ReplicaCheck, check_period
from caffe_lite.distributed.signals import AgreedAction, CountingSignalHandler
from caffe_lite.distributed.status import JobFailed, JobStatus
from caffe_lite.errors import CaffeError
from caffe_lite.proto import caffe_pb2


class FakeComm:
    """Rank `rank` of `size`; the other ranks' contributions are given in advance."""

    def __init__(self, rank, size, others=(), gathered=None):
        self.rank, self.size, self.busy = rank, size, False
        self.others, self.gathered = list(others), gathered

    def allreduce_sum(self, array):
        array += self.others.pop(0).reshape(array.shape)

    def allgather_object(self, obj):
        return [obj if r == self.rank else self.gathered[r] for r in range(self.size)]

    @contextlib.contextmanager
    def sequence(self):
        self.busy = True
        yield
        self.busy = False


# --- BatchNorm statistics ---------------------------------------------------------------------
@pytest.mark.parametrize("size, passes", [(2, 1), (3, 1), (2, 3)])
def test_batch_norm_combination_is_one_process_running_the_batches_in_turn(size, passes):
    rng = np.random.default_rng(0)
    a = np.float64(0.9)
    start = rng.random(5)
    xs = rng.random((size, passes, 5))           # each pass's batch term x
    # one process: every pass in turn, rank 0's passes first (iter_size 1: round-robin)
    sequential = start.copy()
    for r in range(size):
        for i in range(passes):
            sequential = a * sequential + xs[r, i]
    total = np.zeros(5)
    for r in range(size):
        local = start.copy()
        for i in range(passes):
            local = a * local + xs[r, i]
        total += rank_contribution(start, local, np.full(5, a), passes, r, size)
    np.testing.assert_allclose(combined(start, total, np.full(5, a), passes, size),
                               sequential, rtol=1e-13)


# --- gradient buckets -------------------------------------------------------------------------
def test_buckets_keep_order_and_cap_except_for_one_big_blob():
    assert plan_buckets([4, 4, 4, 20, 4], 10) == [[0, 1], [2], [3], [4]]
    assert plan_buckets([4, 4, 4], 1 << 20) == [[0, 1, 2]]
    assert plan_buckets([4, 4], 0) == [[0], [1]]


class _Param:
    def __init__(self, diff):
        self.diff = diff


@pytest.mark.parametrize("bucket_bytes, fuse_below", [(0, 1 << 20), (40, 1 << 20),
                                                     (1 << 20, 1 << 20), (1 << 20, 30)])
def test_averaging_gives_every_blob_the_mean_over_the_ranks(bucket_bytes, fuse_below):
    rng = np.random.default_rng(1)
    shapes = [(3, 2), (5,), (2, 2, 2), (7, 3)]
    mine = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    theirs = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)]
    params = [_Param(m.copy()) for m in mine]
    averager = GradientAverager(FakeComm(0, 3), params, bucket_bytes, fuse_below)
    alone = [b for b in averager.buckets if len(b.params) == 1 and not hasattr(b, "buffer")]
    assert len(alone) == (2 if fuse_below == 30 else 0)      # the 8- and 21-value blobs
    # the fake allreduce adds the other two ranks' packed buffers, bucket by bucket
    for bucket in averager.buckets:
        index = [params.index(p) for p in bucket.params]
        averager.comm.others.append(sum(
            np.concatenate([t[i].ravel() for i in index]) for t in theirs))
    averager.average()
    for p, m, a, b in zip(params, mine, *theirs):
        # the fake's order of the sums, then Caffe's scale by 1/N in float32
        np.testing.assert_array_equal(p.diff, (m + (a + b)) * (np.float32(1) / np.float32(3)))
    assert averager.nbytes == sum(m.nbytes for m in mine)


# --- launcher ---------------------------------------------------------------------------------
@pytest.mark.parametrize("environ, size", [
    ({}, None),
    ({"PMI_SIZE": "4", "PMI_RANK": "1"}, 4),                # MPICH / Intel MPI hydra
    ({"OMPI_COMM_WORLD_SIZE": "2"}, 2),                    # Open MPI
    ({"PMIX_RANK": "0"}, UNKNOWN),                         # a PMIx launcher
    ({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "1"}, 1),  # srun --mpi=pmix -n 1
    ({"SLURM_STEP_NUM_TASKS": "4"}, None),                 # srun without MPI
    ({"MPI_LOCALNRANKS": "2"}, UNKNOWN),
])
def test_launcher_size_from_the_environment(environ, size):
    assert launcher_size(environ) == size


def test_without_mpi4py_rank_0_says_what_to_install_in_one_line(monkeypatch, capsys,
                                                                  restore_glog):
    from caffe_lite.cli import main
    monkeypatch.setitem(__import__("sys").modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert main(["train", "-solver", "any.prototxt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("caffe-lite train: error: started by an MPI launcher (PMI_SIZE=2) but "
                    "mpi4py is not installed: pip install 'caffe-lite[mpi]'")]
    monkeypatch.setenv("PMI_RANK", "1")
    assert main(["train", "-solver", "any.prototxt"]) == 1
    assert capsys.readouterr().err == ""


# --- signals ----------------------------------------------------------------------------------
def test_a_signal_counted_on_several_ranks_is_one_action_on_every_rank():
    handler = CountingSignalHandler("stop", "snapshot")
    root, other = AgreedAction(handler, True), AgreedAction(handler, False)
    for action in (root, other):
        action.agree([0, 1])            # a SIGHUP somewhere in the job
    assert root() == "snapshot" and root() == "none"
    assert other() == "none"            # rank 0 alone writes the snapshot
    for action in (root, other):
        action.agree([0, 1])            # the same SIGHUP reaching a late rank
        assert action() == "none"
        action.agree([1, 2])            # SIGINT and another SIGHUP: SIGINT first
        assert action() == "stop"
        action.agree([1, 2])
    assert root() == "snapshot"


# --- failures and the replica check -----------------------------------------------------------
def test_a_failed_rank_is_named_once_and_rank_0_reads_as_one_process():
    records = [(None, (0, 0)), (("layer 'data': record #45: not a Datum", False), (0, 0))]
    with pytest.raises(JobFailed) as failed:
        JobStatus(FakeComm(0, 2, gathered=records)).exchange()
    assert str(failed.value) == "rank 1 of 2: layer 'data': record #45: not a Datum"
    assert isinstance(failed.value, CaffeError)
    records = [(("solver.prototxt:3: bad", False), (0, 0)), (None, (2, 0))]
    with pytest.raises(JobFailed, match=r"^solver.prototxt:3: bad$"):
        JobStatus(FakeComm(1, 2, gathered=records)).exchange()
    # no failure: the highest count of each signal
    records = [(None, (1, 0)), (None, (0, 3))]
    assert JobStatus(FakeComm(0, 2, gathered=records)).exchange((1, 0)) == [1, 3]


class _Solver:
    def __init__(self, arrays):
        blobs = [type("B", (), {"data": a})() for a in arrays]
        self.net = type("N", (), {"layer_names": ["conv", "ip"],
                                  "learnable_param_owners": [(0, 0), (1, 0)],
                                  "learnable_params": blobs})()
        self.history = [np.zeros(2, np.float32), np.zeros(3, np.float32)]


def test_replica_check_names_the_first_blob_that_differs():
    from caffe_lite.distributed.replica_check import digests
    arrays = [np.ones(2, np.float32), np.arange(3, dtype=np.float32)]
    solver = _Solver(arrays)
    same = digests(arrays + solver.history)
    other = list(same)
    other[1] = digests([arrays[1] + np.float32(1e-7)])[0]
    ReplicaCheck(FakeComm(0, 2, gathered=[None, same]), solver, 1).check(4)
    with pytest.raises(JobFailed, match=r"rank 1 of 2: its ip\[0\] differs from rank 0's "
                                        r"at iteration 4"):
        ReplicaCheck(FakeComm(0, 2, gathered=[None, other]), solver, 1).check(4)


def test_check_period_from_debug_info_or_the_environment():
    param = caffe_pb2.SolverParameter(display=20)
    assert check_period(param, {}) == 0
    param.debug_info = True
    assert check_period(param, {}) == 20
    assert check_period(param, {"CAFFE_LITE_CHECK_REPLICAS": "5"}) == 5
    with pytest.raises(CaffeError, match="CAFFE_LITE_CHECK_REPLICAS"):
        check_period(param, {"CAFFE_LITE_CHECK_REPLICAS": "often"})
