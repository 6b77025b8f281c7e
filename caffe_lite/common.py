"""Process-wide state that Caffe keeps in its `Caffe` singleton: phase names, mode, RNG."""
import numpy as np

from .log import LOG

TRAIN = 0
TEST = 1
PHASE_NAMES = {TRAIN: "TRAIN", TEST: "TEST"}

_rng = np.random.default_rng()
_mode = "CPU"
_gpu_warned = False


def rng():
    """The one generator behind fillers, dropout masks and shuffles (Caffe's caffe_rng)."""
    return _rng


def set_random_seed(seed):
    global _rng
    _rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)


def get_rng_state():
    return _rng.bit_generator.state


def set_rng_state(state):
    _rng.bit_generator.state = state


def set_mode_cpu():
    global _mode
    _mode = "CPU"


def set_mode_gpu():
    """Accepted so pycaffe scripts run; caffe-lite always computes on the CPU."""
    global _mode, _gpu_warned
    if not _gpu_warned:
        LOG.warning("GPU mode requested; caffe-lite runs on the CPU.")
        _gpu_warned = True
    _mode = "CPU"


def set_device(device_id):
    set_mode_gpu()
