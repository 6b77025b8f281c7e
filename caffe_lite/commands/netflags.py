"""Flag handling shared by the commands that build one net (test, time), as tools/caffe.cpp."""
from ..common import TEST, TRAIN
from ..errors import CaffeError
from ..log import LOG


def stages_from_flag(value):
    return [s for s in value.split(",") if s]


def warn_gpu(value):
    if value:
        LOG.warning("-gpu %s requested; caffe-lite runs on the CPU.", value)
        from .. import common
        common._gpu_warned = True  # one warning in all, not one more from the solver


def phase_from_flag(command, value, default):
    phase = {"": default, "TRAIN": TRAIN, "TEST": TEST}.get(value)
    if phase is None:
        raise CaffeError(f"{command}: -phase must be \"TRAIN\" or \"TEST\", got \"{value}\"")
    return phase


def net_from_flags(command, values, default_phase):
    """The -model net in the -phase/-level/-stage state with every -weights file copied in."""
    phase = phase_from_flag(command, values["phase"], default_phase)
    if values["iterations"] < 1:
        raise CaffeError(f"{command}: -iterations must be >= 1, got {values['iterations']}")
    warn_gpu(values["gpu"])
    LOG.info("Use CPU.")
    from ..net import Net
    net = Net(values["model"], phase=phase, level=values["level"],
              stages=tuple(stages_from_flag(values["stage"])))
    for name in values["weights"].split(","):
        if name.strip():
            net.copy_from(name.strip())
    return net
