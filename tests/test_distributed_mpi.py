"""`mpiexec -n 2 caffe-lite train` on this machine: two ranks with batch B train as one
process with batch B and iter_size 2 (SGD, Nesterov, Adam; with and without BatchNorm; a
shuffled LMDB; NVCaffe's BatchNorm), rank 0 alone logs, and the replicas stay
bit-identical. Skipped when MPI cannot start (no mpi4py or mpiexec: pip install
'caffe-lite[mpi]')."""
import re
import subprocess
import sys
from pathlib import Path

import distributed_setup as setup
import numpy as np
import pytest

LAUNCHER, WHY_NOT = setup.mpiexec()
pytestmark = pytest.mark.skipif(LAUNCHER is None, reason=WHY_NOT or "MPI")
ITERATIONS = 20
TESTS = Path(__file__).resolve().parent


def assert_same_training(got_path, want_path, iterations=ITERATIONS, skip=()):
    """Every blob (but `skip`'s) equal up to float32 rounding: the sums run in another order
    (gradients) or in float64 and rounded once (BatchNorm statistics), a few roundings an
    iteration."""
    got, want = setup.read_model(got_path), setup.read_model(want_path)
    assert got.keys() == want.keys()
    eps = np.finfo(np.float32).eps
    for key, w in want.items():
        if key in skip:
            continue
        tolerance = 4 * iterations * eps * max(float(np.abs(w).max()), 1.0)
        diff = float(np.abs(got[key] - w).max())
        assert diff <= tolerance, f"{key}: differs by {diff:.3g} > {tolerance:.3g}"


def train_here(*solvers):
    """The one-process references, in one interpreter."""
    subprocess.run([sys.executable, str(TESTS / "distributed_train_many.py")]
                   + [str(s) for s in solvers], env=setup.rank_env(), check=True,
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dp")
    setup.make_db(folder / "db")
    return folder


CASES = [(rule, bn, False) for bn in (False, True) for rule in setup.RULES] + \
        [("SGD", False, True), ("SGD", "nvcaffe", False)]


def _case_solvers(folder, rule, batch_norm, shuffle):
    name = f"{rule}_bn{batch_norm}{'_shuffle' if shuffle else ''}"
    net = setup.write_net(folder, folder / "db", batch_norm, shuffle, f"net_{name}.prototxt")
    return (setup.write_solver(folder, net, f"{name}_ranks2", rule),
            setup.write_solver(folder, net, f"{name}_iter_size2", rule, iter_size=2))


def test_two_ranks_update_as_one_process_with_iter_size_2(folder):
    pairs = [_case_solvers(folder, *case) for case in CASES]
    # the replicas are compared every iteration too
    run = subprocess.run([LAUNCHER, "-n", "2", sys.executable,
                          str(TESTS / "distributed_train_many.py")]
                         + [str(two) for two, _ in pairs], cwd=folder,
                         env=setup.rank_env(CAFFE_LITE_CHECK_REPLICAS="1"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    train_here(*[one for _, one in pairs])
    for (two, one), (_, batch_norm, _) in zip(pairs, CASES):
        # NVCaffe's statistics are rank 0's (Caffe's rule), not those of iter_size 2
        skip = {("bn", 0), ("bn", 1)} if batch_norm == "nvcaffe" else ()
        assert_same_training(f"{two.with_suffix('')}_iter_{ITERATIONS}.caffemodel",
                             f"{one.with_suffix('')}_iter_{ITERATIONS}.caffemodel", skip=skip)


def test_the_command_logs_on_rank_0_only_and_keeps_the_replicas_identical(folder):
    two, one = _case_solvers(folder, "SGD", True, False)
    run = subprocess.run(setup.command_line(2, ["train", "-solver", str(two)]), cwd=folder,
                         env=setup.rank_env(CAFFE_LITE_CHECK_REPLICAS="1"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    glog = [line for line in run.stderr.splitlines() if re.match(r"[IWEF]\d{4} ", line)]
    assert len({line.split()[2] for line in glog}) == 1, "a rank other than 0 logged"
    assert not [line for line in glog if not line.startswith("I")]
    text = run.stderr
    assert text.count("Solving tiny") == 1 and text.count("Optimization Done.") == 2
    assert "Data-parallel training on 2 ranks" in text
    assert "BatchNorm statistics combined over the ranks" in text
    assert re.search(r"Ranks \(host:pid\): 0 = \S+:\d+, 1 = \S+:\d+", text)
    # rank 0 tested (once at 0, 10 and 20) on the whole test set
    assert text.count("Test net output #0: acc") == 3
    train_here(one)
    assert_same_training(f"{two.with_suffix('')}_iter_{ITERATIONS}.caffemodel",
                         f"{one.with_suffix('')}_iter_{ITERATIONS}.caffemodel")
