"""`caffe-lite train`: train or finetune a model (tools/caffe.cpp train()).

    caffe-lite train -solver S [-weights a.caffemodel[,b.caffemodel]] [-snapshot x.solverstate]
                     [-sigint_effect stop|snapshot|none] [-sighup_effect snapshot|stop|none]
                     [-level N] [-stage s1,s2] [-gpu ids|all] [-iterations N] [-strict]
                     [-inq_portion P] [-max_memory M]

As Caffe: -weights and -snapshot are exclusive; -level/-stage go into the solver's
train_state; SIGINT stops (after the final snapshot) and SIGHUP snapshots unless told
otherwise; -gpu is accepted (with one warning) and the CPU is used. -iterations, when given,
replaces the solver's max_iter (Caffe's train ignores it). -inq_portion runs official
INQ's step on plain Caffe files (compress/dns_inq_training.py). Logs go to stderr in glog's shape;
a progress bar (iteration, loss, ETA) is added only when stderr is a terminal.

Started by an MPI launcher (`mpiexec -n N caffe-lite train ...`, the `mpi` extra), the
process is one rank of a data-parallel run (caffe_lite/distributed, docs/distributed.md):
the job object says where a rank differs from a plain process.
"""
import sys

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..errors import CaffeError
from ..log import LOG
from ..solvers.progress import ProgressBar
from .netflags import (MAX_MEMORY_FLAG, STRICT_FLAG, net_memory_limit, stages_from_flag,
                       strict_fork_fields, warn_gpu)

FLAGS = [
    Flag("solver", "", str, "The solver definition protocol buffer text file."),
    Flag("weights", "", str, "Optional; the pretrained weights to initialize finetuning, "
                             "separated by ','. Cannot be set simultaneously with snapshot."),
    Flag("snapshot", "", str, "Optional; the snapshot solver state to resume training."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    Flag("sigint_effect", "stop", str, "Action on SIGINT: snapshot, stop or none."),
    Flag("sighup_effect", "snapshot", str, "Action on SIGHUP: snapshot, stop or none."),
    Flag("level", 0, int, "Optional; network level."),
    Flag("stage", "", str, "Optional; network stages, separated by ','."),
    Flag("iterations", None, int, "Optional; the number of iterations to run, replacing "
                                  "the solver's max_iter."),
    Flag("inq_portion", None, float, "Optional; official INQ: quantize this fraction of "
                                     "blob 0 of every layer to powers of two when training "
                                     "starts and freeze it (0.3, 0.6, 0.8, 1.0)."),
    MAX_MEMORY_FLAG,
    STRICT_FLAG,
]


@command("train", "train or finetune a model", "-solver SOLVER [flags]")
def train(argv):
    from ..distributed import training_job
    from ..distributed.status import RankExit
    try:
        job = training_job()
    except RankExit as quiet:
        return quiet.code
    return job.run(lambda: _train_with_flags(argv, job))


def _train_with_flags(argv, job):
    values, positional = parse_flags(argv, FLAGS)
    with strict_fork_fields(values["strict"]), net_memory_limit(values["max_memory"]):
        return _train(values, positional, job)


def _train(values, positional, job):
    if positional:
        raise unexpected_argument(positional, 0)
    if not values["solver"]:
        raise CaffeError("Need a solver definition to train (-solver).")
    if values["snapshot"] and values["weights"]:
        raise CaffeError("Give a snapshot to resume training or weights to finetune "
                         "but not both.")
    from ..solvers.signals import check_effect
    check_effect(values["sigint_effect"], "sigint_effect")
    check_effect(values["sighup_effect"], "sighup_effect")

    from ..io.prototxt import read_solver_param
    from ..solvers.factory import get_solver
    solver_path = values["solver"]
    param = read_solver_param(solver_path)
    param.train_state.level = values["level"]
    for stage in stages_from_flag(values["stage"]):
        param.train_state.stage.append(stage)
    if values["iterations"] is not None:
        if values["iterations"] < 1:      # as test and time: a run of no iteration is a typo
            raise CaffeError(f"-iterations must be >= 1, got {values['iterations']}")
        param.max_iter = values["iterations"]
    warn_gpu(values["gpu"])
    LOG.info("Use CPU.")
    if values["snapshot"] or values["weights"]:
        # the flag replaces the solver's own `weights`, as in Caffe
        param.ClearField("weights")
    job.prepare_param(param)

    ahead = job.compile_ahead(param, solver_path)
    try:
        with job.signal_handler(values["sigint_effect"], values["sighup_effect"]) as handler:
            _solve(get_solver(param, path=solver_path), values, handler, job, ahead)
    finally:
        if ahead is not None:
            ahead.stop()
    LOG.info("Optimization Done.")
    return 0


def _solve(solver, values, handler, job, ahead):
    if ahead is not None:
        solver.add_callback(after_update=ahead.first_update_done)
    solver.set_action_function(job.action_function(handler))
    if values["inq_portion"] is not None:
        from ..compress.dns_inq_training import OfficialInqHook
        solver.add_hook(OfficialInqHook(values["inq_portion"]))
    if values["snapshot"]:
        LOG.info("Resuming from %s", values["snapshot"])
        job.restore(solver, values["snapshot"])
    elif values["weights"]:
        job.load_weights(solver, values["weights"])
    job.start(solver)
    with ProgressBar.for_solver(solver, job.progress_stream(sys.stderr)):
        LOG.info("Starting Optimization")
        solver.solve()
