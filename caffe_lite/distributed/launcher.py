"""Is this process one rank of an MPI job? Told by the launcher's environment, before mpi4py
(which starts MPI when imported) is ever imported: a plain `caffe-lite train` never loads it.

mpiexec / mpirun of MPICH (hydra) and Intel MPI set PMI_RANK / PMI_SIZE and
MPI_LOCALNRANKS; Open MPI sets OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE; PMIx launchers
(prterun, srun --mpi=pmix) set PMIX_RANK, and Slurm's srun the step's task count. A job of
one rank trains as a plain process; a job whose size no variable gives needs mpi4py to tell.
"""
from ..errors import CaffeError

INSTALL_HINT = "pip install 'caffe-lite[mpi]'"
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
# read only under one of the launchers above (an salloc shell sets it too)
_SLURM_SIZE = "SLURM_STEP_NUM_TASKS"
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
# set by a launcher that does not say how many ranks the job has
_MARKER_VARIABLES = ("PMIX_RANK", "MPI_LOCALNRANKS", "PMI_RANK")
UNKNOWN = -1


def launcher_variable(environ):
    """(name, value) of the first launcher variable set, or None outside a launcher."""
    for name in _SIZE_VARIABLES + _MARKER_VARIABLES:
        if environ.get(name, "").strip():
            return name, environ[name].strip()
    return None


def launcher_size(environ):
    """The job's rank count as the launcher gives it: None outside a launcher, UNKNOWN when
    the launcher does not say."""
    if launcher_variable(environ) is None:
        return None
    for name in _SIZE_VARIABLES + (_SLURM_SIZE,):
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return UNKNOWN


def launcher_rank(environ):
    for name in _RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def import_mpi(environ):
    """mpi4py's MPI module (MPI starts here), or one error line saying what to install."""
    try:
        import mpi4py
    except ImportError:
        name, value = launcher_variable(environ)
        raise CaffeError(f"started by an MPI launcher ({name}={value}) but mpi4py is not "
                         f"installed: {INSTALL_HINT}") from None
    import sys
    if "mpi4py.MPI" not in sys.modules:
        # only the main thread calls MPI (the prefetch threads never do): the cheapest level
        mpi4py.rc.thread_level = "funneled"
    try:
        from mpi4py import MPI
    except ImportError as err:      # mpi4py without an MPI library it can load
        raise CaffeError(f"mpi4py cannot load an MPI library ({err}): {INSTALL_HINT} "
                         "installs MPICH with it") from None
    return MPI
