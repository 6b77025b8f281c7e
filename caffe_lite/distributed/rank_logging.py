"""Rank 0 alone logs: the other ranks keep their warnings and errors, each line saying which
rank wrote it (`W1204 ... solver.py:88] rank 1: ...`), and draw no progress bar."""
import contextlib
import logging

from ..log import LOG


class _RankPrefix(logging.Filter):
    def __init__(self, rank):
        super().__init__()
        self.prefix = f"rank {rank}: "

    def filter(self, record):
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


@contextlib.contextmanager
def rank_logging(rank):
    if rank == 0:
        yield
        return
    level, prefix = LOG.level, _RankPrefix(rank)
    LOG.setLevel(max(level, logging.WARNING))
    LOG.addFilter(prefix)
    try:
        yield
    finally:
        LOG.removeFilter(prefix)
        LOG.setLevel(level)
