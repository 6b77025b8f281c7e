"""Flag handling shared by the commands that build nets (train, test, time), as tools/caffe.cpp."""
import contextlib
import os

from ..cli import Flag
from ..common import TEST, TRAIN
from ..errors import CaffeError
from ..log import LOG


STRICT_FLAG = Flag("strict", False, bool, "Turn warnings about fork fields that caffe-lite "
                                          "does not implement yet into errors.")


@contextlib.contextmanager
def strict_fork_fields(strict):
    """-strict for the length of one command: an in-process caller gets its setting back."""
    if not strict:
        yield
        return
    from ..compress.fork_fields import set_strict
    old = set_strict(True)
    try:
        yield
    finally:
        set_strict(old)


MAX_MEMORY_FLAG = Flag("max_memory", "", str, "Refuse a net whose blobs (data and diff) need "
                                              "more than this (e.g. 4G); default: the memory "
                                              "the machine has available.")


@contextlib.contextmanager
def net_memory_limit(value):
    """-max_memory for the length of one command (memory_guard.py)."""
    from .. import memory_guard
    if not value:
        yield
        return
    memory_guard.set_limit(memory_guard.parse_size(value))
    try:
        yield
    finally:
        memory_guard.set_limit(None)


def stages_from_flag(value):
    return [s for s in value.split(",") if s]


def warn_gpu(value, what="-gpu"):
    """One warning that `what` (the flag, or a config's field) asks for GPUs `value`."""
    if value:
        LOG.warning("%s %s requested; caffe-lite runs on the CPU.", what, value)
        from .. import common
        common._gpu_warned = True  # one warning in all, not one more from the solver


def phase_from_flag(value, default):
    phase = {"": default, "TRAIN": TRAIN, "TEST": TEST}.get(value)
    if phase is None:
        raise CaffeError(f"-phase must be \"TRAIN\" or \"TEST\", got \"{value}\"")
    return phase


def net_from_flags(values, default_phase):
    """The -model net in the -phase/-level/-stage state with every -weights file copied in."""
    phase = phase_from_flag(values["phase"], default_phase)
    if values["iterations"] < 1:
        raise CaffeError(f"-iterations must be >= 1, got {values['iterations']}")
    warn_gpu(values["gpu"])
    LOG.info("Use CPU.")
    from ..net import Net
    net = Net(values["model"], phase=phase, level=values["level"],
              stages=tuple(stages_from_flag(values["stage"])))
    for name in values["weights"].split(","):
        if name.strip():
            net.copy_from(name.strip())
    return net


def output_prefix(output):
    """<dir(OUT)>/<stem(OUT)>: boost's parent_path and stem (the last extension goes), as
    caffe-jacinto's threshold and optimize name their outputs."""
    folder, name = os.path.split(output)
    return os.path.join(folder or ".", os.path.splitext(name)[0])
