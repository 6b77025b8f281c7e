"""Faults of a two-rank job (`mpiexec -n 2 caffe-lite train`): a rank that raises, a rank
killed with SIGKILL, SIGINT and SIGUSR1 (hydra's stand-in for SIGHUP) to mpiexec, and a
snapshot resumed at another rank count. Skipped when MPI cannot start."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import distributed_setup as setup
import pytest
from test_distributed_mpi import assert_same_training, train_here

LAUNCHER, WHY_NOT = setup.mpiexec()
pytestmark = pytest.mark.skipif(LAUNCHER is None, reason=WHY_NOT or "MPI")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    setup.make_db(folder / "db")
    setup.write_net(folder, folder / "db", batch_norm=True)
    return folder


def _long_solver(folder, name, snapshot):
    return setup.write_solver(folder, folder / "net.prototxt", name, max_iter=10 ** 6,
                              snapshot=snapshot, test_interval=100000)


def _snapshots(folder, name):
    return sorted((int(re.search(r"_iter_(\d+)\.solverstate$", p.name).group(1)), p)
                  for p in Path(folder).glob(f"{name}_iter_*.solverstate"))


def _error_lines(lines):
    return [line for line in lines if line.startswith("caffe-lite train:")]


def test_a_rank_that_raises_stops_every_rank_with_one_line(folder):
    # record 45 is in batch 11 (batch 4): rank 1's sixth batch, never rank 0's
    setup.make_db(folder / "bad_db", bad_record=45)
    net = setup.write_net(folder, folder / "bad_db", name="bad_net.prototxt")
    solver = setup.write_solver(folder, net, "bad", max_iter=100)
    start = time.monotonic()
    run = subprocess.run(setup.command_line(2, ["train", "-solver", str(solver)]),
                         cwd=folder, env=setup.rank_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert _error_lines(run.stderr.splitlines()) == [(
        f"caffe-lite train: error: rank 1 of 2: {net}:2: layer 'data' (Data): data_param.source "
        f"'{folder / 'bad_db'}', record #45 (in key order): not a Datum (14 bytes that do "
        f"not parse as one)")]
    assert "Iteration 5" in run.stderr and "Iteration 6" not in run.stderr
    assert time.monotonic() - start < 60


def test_a_killed_rank_ends_the_job_and_the_last_snapshot_resumes(folder):
    solver = _long_solver(folder, "killed", snapshot=5)
    job = setup.LiveRun(setup.command_line(2, ["train", "-solver", str(solver)]), folder)
    ranks = job.wait_for("Ranks (host:pid)")
    rank1 = int(re.search(r"1 = \S+:(\d+)", ranks).group(1))
    job.wait_for("killed_iter_15.solverstate")
    killed = time.monotonic()
    os.kill(rank1, signal.SIGKILL)
    code, lines = job.finish(timeout=30)
    assert code != 0 and time.monotonic() - killed < 10
    # mpiexec names the dead process by the pid that rank 0's log maps to rank 1
    assert any(f"PID {rank1}" in line for line in lines), "\n".join(lines[-15:])
    last, state = _snapshots(folder, "killed")[-1]
    assert last >= 15
    resumed = setup.write_solver(folder, folder / "net.prototxt", "killed_resumed",
                                 iter_size=2, max_iter=last + 2, snapshot=0)
    subprocess.run(setup.caffe_lite_command() + ["train", "-solver", str(resumed),
                                                 "-snapshot", str(state)],
                   env=setup.rank_env(), check=True, capture_output=True, timeout=120)


def test_sigusr1_then_sigint_to_mpiexec_snapshot_then_stop_every_rank_in_step(folder):
    solver = _long_solver(folder, "signals", snapshot=0)
    job = setup.LiveRun(setup.command_line(2, ["train", "-solver", str(solver)]), folder)
    job.wait_for("Iteration 10 ")
    job.proc.send_signal(signal.SIGUSR1)         # hydra forwards it; SIGHUP would kill it
    job.wait_for("Snapshotting solver state")
    job.proc.send_signal(signal.SIGINT)
    code, lines = job.finish(timeout=60)
    assert code == 0, "\n".join(lines[-20:])
    text = "\n".join(lines)
    assert text.count("Optimization stopped early.") == 1
    written = [int(it) for it in re.findall(
        r"Snapshotting to binary proto file \S+_iter_(\d+)\.caffemodel", text)]
    # one snapshot per signal (SIGINT's: the stop's), by rank 0 alone
    assert [it for it, _ in _snapshots(folder, "signals")] == written
    assert len(written) == 2 and 10 <= written[0] < written[1]
    assert text.rindex("Snapshotting to") < text.index("Optimization stopped early.")


def test_a_snapshot_resumes_at_another_rank_count(folder):
    net = folder / "net.prototxt"
    reference = setup.write_solver(folder, net, "reference", iter_size=2)
    two_first = setup.write_solver(folder, net, "two_first", max_iter=10, snapshot=10)
    one_then = setup.write_solver(folder, net, "one_then", iter_size=2, prefix="two_first")
    one_first = setup.write_solver(folder, net, "one_first", iter_size=2, max_iter=10,
                                   snapshot=10)
    two_then = setup.write_solver(folder, net, "two_then", prefix="one_first")
    run = setup.run_ranks(2, ["train", "-solver", str(two_first)], folder)
    assert run.returncode == 0, run.stderr[-3000:]
    train_here(reference, one_first)
    # 2 ranks -> 1 process with iter_size 2, and 1 process -> 2 ranks
    subprocess.run(setup.caffe_lite_command() + [
        "train", "-solver", str(one_then), "-snapshot",
        str(folder / "two_first_iter_10.solverstate")], env=setup.rank_env(), check=True,
        capture_output=True, timeout=120)
    run = setup.run_ranks(2, ["train", "-solver", str(two_then), "-snapshot",
                              str(folder / "one_first_iter_10.solverstate")], folder)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("two_first", "one_first"):
        assert_same_training(folder / f"{name}_iter_20.caffemodel",
                             folder / "reference_iter_20.caffemodel")
