"""One error line instead of a silent death when a damaged LMDB makes a read fault.

LMDB memory-maps data.mdb. A damaged page (a record size or a node offset overwritten) can
send a read past the end of the file but inside the mapping, and the kernel answers with
SIGBUS, which kills the process with no message. db._check_covered refuses the truncated
files; what it cannot see without walking every page is damage inside a page, so the first
LMDB opened in a process installs (Linux) a SIGBUS handler that prints
`caffe-lite COMMAND: error: DB: damaged LMDB database: ...` naming the database whose mapping
holds the faulting address (from /proc/self/maps), and exits with code 1 as every error does.
Only a caffe-lite command installs it; a script using the library keeps its own handling.

The handler is a ctypes callback registered with sigaction(SA_SIGINFO), since Python's own
signal handlers run between bytecodes, never while the faulting C read is on the stack. It
only writes one line and calls os._exit: nothing can be recovered from a fault in the
middle of a read.
"""
import ctypes
import os
import signal
import sys
import threading

from ..errors import CaffeError

_SA_SIGINFO = 4
_installed = False
_callback = None         # the ctypes callback, kept alive: the kernel calls into it
_lock = threading.Lock()
_given_paths = {}        # real path of an opened database -> the path as the user gave it


class _SigInfo(ctypes.Structure):
    # Linux's siginfo_t up to si_addr (the same offsets on 64-bit x86, ARM and POWER)
    _fields_ = [("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int),
                ("si_code", ctypes.c_int), ("_pad", ctypes.c_int), ("si_addr", ctypes.c_void_p)]


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_SigInfo), ctypes.c_void_p)


class _SigAction(ctypes.Structure):
    # glibc's struct sigaction on 64-bit Linux (sa_restorer is filled in by glibc)
    _fields_ = [("sa_sigaction", _HANDLER), ("sa_mask", ctypes.c_ulong * 16),
                ("sa_flags", ctypes.c_int), ("sa_restorer", ctypes.c_void_p)]


def watch(path):
    """Name the LMDB at `path` (as given) in the error line of a fault in its mapping, and
    install the handler if this process is a caffe-lite command and has not yet (Linux,
    64-bit). A script that uses caffe-lite as a library keeps its own signal handling
    (faulthandler's, say): importing or using caffe-lite changes no process setting."""
    _given_paths[os.path.realpath(path)] = os.fspath(path)
    if _running_command() is not None:
        _install()


def _running_command():
    return getattr(sys.modules.get("caffe_lite.cli"), "running_command", None)


def _install():
    global _installed, _callback
    if _installed or not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return
    with _lock:
        if _installed:
            return
        _callback = _HANDLER(_on_bus_error)
        action = _SigAction()
        action.sa_sigaction = _callback
        action.sa_flags = _SA_SIGINFO
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.sigaction(signal.SIGBUS, ctypes.byref(action), None) == 0:
            _installed = True


def _on_bus_error(signum, info, context):
    try:
        address = info.contents.si_addr or 0
        line = _error_line(address)
    except BaseException:       # whatever happens here, the process must still end cleanly
        line = "caffe-lite: error: bus error reading a memory-mapped file\n"
    os.write(2, line.encode("utf-8", "replace"))
    os._exit(1)


def _error_line(address):
    database = mapped_database(address)
    if database is not None:
        database = _given_paths.get(os.path.realpath(database), database)
        error = CaffeError("damaged LMDB database: a read ran past the end of data.mdb (bus "
                           "error)", database)
    else:
        error = CaffeError("bus error reading a memory-mapped file (damaged or shrunk while "
                           "being read?)")
    command = _running_command()
    prefix = f"caffe-lite {command}" if command else "caffe-lite"
    return f"{prefix}: error: {error}\n"


def mapped_database(address, maps_file="/proc/self/maps"):
    """The LMDB folder whose data.mdb mapping holds `address`, or None."""
    with open(maps_file) as maps:
        for entry in maps:
            fields = entry.split(None, 5)
            if len(fields) < 6:
                continue
            start, stop = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5].strip()
            if start <= address < stop and os.path.basename(path) == "data.mdb":
                return os.path.dirname(path)
    return None
