"""Memory pre-flight: a net whose blobs would not fit is refused before they are allocated.

NumPy's zeros of a few GB succeed (the pages come on first touch), so a net of 6 GB would
start and die mid-forward, and one of 3 TiB fails with a message that names no layer. While
a Net is built (`budget`), every blob allocation is charged (data and diff) before it is
made; past the limit, `BudgetExceeded` is raised, and the Net turns it into one error line
naming the layer, what the blobs so far take and the largest layers. The limit is the
memory the machine has available (Linux's MemAvailable), or -max_memory / set explicitly.
The check is one addition per blob allocation: it costs nothing on ordinary nets.
Scratch buffers (im2col, workspaces) are allocated later and are not counted.
"""
import os
import re
import threading
from contextlib import contextmanager

from .errors import CaffeError

_local = threading.local()
_limit = None           # set_limit's, for every Net built without its own max_memory


class BudgetExceeded(Exception):
    """Raised inside a blob allocation that would pass the limit."""


class Budget:
    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.layer = None
        self.by_layer = {}

    def charge(self, nbytes):
        self.used += nbytes
        self.by_layer[self.layer] = self.by_layer.get(self.layer, 0) + nbytes
        if self.used > self.limit:
            raise BudgetExceeded()

    def largest(self, n=3):
        ranked = sorted(((b, name) for name, b in self.by_layer.items() if name), reverse=True)
        return ", ".join(f"{name} {human(b)}" for b, name in ranked[:n])


def charge(nbytes):
    """Count `nbytes` about to be allocated against the active budget, if any."""
    active = getattr(_local, "budget", None)
    if active is not None and nbytes > 0:
        active.charge(nbytes)


@contextmanager
def budget(limit):
    """Charge blob allocations to a Budget of `limit` bytes (None: no limit) inside."""
    if limit is None:
        yield None
        return
    outer = getattr(_local, "budget", None)
    _local.budget = Budget(limit)
    try:
        yield _local.budget
    finally:
        _local.budget = outer


def set_limit(nbytes):
    """The limit of every net built from now on (the commands' -max_memory); None: what the
    machine has available."""
    global _limit
    _limit = nbytes


def default_limit():
    return _limit if _limit is not None else available_memory()


def available_memory():
    """Bytes the machine can still give (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text, flag="-max_memory"):
    """Bytes of '512M', '4G', '1.5T' or a plain number of bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m or float(m.group(1)) <= 0:
        raise CaffeError(f"{flag} takes a size such as 512M or 4G, got '{text}'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human(nbytes):
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        size = _UNITS[unit[0]]
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} B"
