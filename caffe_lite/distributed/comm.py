"""The few collective operations data-parallel training needs, over an mpi4py communicator.

Everything MPI goes through here, so the rest of the package reads as NumPy. `busy` is true
while a sequence of collectives that must run to its end on every rank is under way (the
gradient buckets): a rank that fails inside one cannot tell the others in order, so the job
ends it with an abort instead of the agreed stop (status.py).
"""
import contextlib


class Communicator:
    def __init__(self, mpi, comm):
        self.MPI = mpi
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.busy = False

    @property
    def is_root(self):
        return self.rank == 0

    @contextlib.contextmanager
    def sequence(self):
        """Collectives that every rank runs to the end together."""
        self.busy = True
        yield
        self.busy = False

    def allreduce_sum(self, array):
        """array <- its sum over the ranks, in place (a contiguous float array)."""
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def bcast_array(self, array, root=0):
        """array <- root's array, in place (a contiguous array)."""
        if array.size:
            self.comm.Bcast(array, root)

    def bcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root)

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def ranks_on_this_host(self):
        """How many ranks of the job share this machine (they share its cores)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()
