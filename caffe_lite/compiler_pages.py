"""Hand LLVM's code back to the page cache once the kernels a pass needs are loaded.

Numba links every cached kernel it loads through LLVM, and the first load touches most of
libllvmlite.so: 60-70 MB of its code and read-only data become resident in the process and
stay there for the whole run, although nothing calls into LLVM again until another kernel
loads (the LeNet main job's peak RSS: 256 MB, of which 68 MB was this library). The pages are
the file's own: a mapping that is not writable and holds no page of its own (smaps'
Anonymous: 0) can be dropped with madvise(MADV_DONTNEED), and the next call into LLVM maps
them again from the page cache (minor faults, no disk read). The relocated part of the
library (its own private pages) is never touched.

`release` is called after each layer of a net's first forward and first backward and after
a solver's first update, the points by which a run has loaded its kernels. It acts only where
the process grew by GROWTH since it last acted: a kernel load after a release maps some of
LLVM's pages again (minor faults: 30-40 ms in all on a warm LeNet start), and a layer that
loaded nothing new should not pay for a release. The library's mappings are read from
/proc/self/smaps once; a later call costs one read of /proc/self/statm and one madvise per
mapping. Linux only; elsewhere, or where the library is not loaded yet, it does nothing.
"""
import os
import sys

from .data import mapped_pages

LIBRARY = "libllvmlite"
GROWTH = 16 << 20
_ranges = None
_resident_after = 0     # the process's resident bytes after the last release


def release(smaps_file="/proc/self/smaps"):
    """Drop this process's resident pages of LLVM's file-backed, unwritten mappings where the
    process grew by GROWTH since the last release; returns the bytes of mappings advised."""
    global _ranges, _resident_after
    if not sys.platform.startswith("linux") or resident() - _resident_after < GROWTH:
        return 0
    if _ranges is None:
        found = clean_mappings(LIBRARY, smaps_file)
        if not found:
            return 0            # not loaded yet: look again next time
        _ranges = found
    advised = sum(stop - start for start, stop in _ranges if mapped_pages.drop(start, stop))
    _resident_after = resident()
    return advised


def resident():
    """This process's resident bytes (0 where /proc/self/statm cannot be read)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def clean_mappings(name, smaps_file="/proc/self/smaps"):
    """[(start, stop)] of the mappings of a file whose path contains `name`, that are not
    writable and hold no anonymous (privately written) page."""
    found, current = [], None
    try:
        with open(smaps_file) as smaps:
            for line in smaps:
                fields = line.split()
                if not fields:
                    continue
                if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                    current = None
                    if len(fields) == 6 and name in fields[5] and "w" not in fields[1]:
                        start, stop = (int(x, 16) for x in fields[0].split("-"))
                        current = (start, stop)
                elif current and fields[0] == "Anonymous:":
                    if int(fields[1]) == 0:
                        found.append(current)
                    current = None
    except OSError:
        return []
    return found
