"""Keep a database's memory-mapped pages from piling up in the process's resident memory.

LMDB reads through a read-only shared mapping of data.mdb, and every page a reader has touched
stays resident in the process (and counts in its RSS) until the mapping goes: one epoch over
MNIST's 59 MB training set adds 59 MB to a LeNet run's peak RSS, an ImageNet database far
more. The kernel keeps those pages in its page cache either way; madvise(MADV_DONTNEED) on the
mapping only drops this process's references, and the next read of a page maps it again from
the cache (a minor fault, no disk read). The mapping is read-only and shared, so nothing is
lost, even for a reader in the middle of a copy. Linux only; elsewhere `release` does nothing.
"""
import ctypes
import os
import sys

_MADV_DONTNEED = 4
_madvise = None


def release(data_file, maps_file="/proc/self/maps"):
    """Drop this process's resident pages of every mapping of `data_file`; returns the
    number of bytes of mappings released (0 where the platform has no such call)."""
    if not sys.platform.startswith("linux"):
        return 0
    return sum(stop - start for start, stop in mappings(data_file, maps_file)
               if drop(start, stop))


def drop(start, stop):
    """madvise(MADV_DONTNEED) on [start, stop): True where the call succeeded. Only for
    mappings whose pages the file itself holds (read-only shared, or private and never
    written): on a private page that was written, the change would be lost."""
    global _madvise
    if _madvise is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _madvise = libc.madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _madvise(start, stop - start, _MADV_DONTNEED) == 0


def mappings(data_file, maps_file="/proc/self/maps"):
    """[(start, stop)] of this process's mappings of `data_file`."""
    target = os.path.realpath(data_file)
    found = []
    with open(maps_file) as maps:
        for entry in maps:
            fields = entry.split(None, 5)
            if len(fields) == 6 and fields[5].rstrip("\n") == target:
                start, stop = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, stop))
    return found
