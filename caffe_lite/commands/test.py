"""`caffe-lite test`: score a model (tools/caffe.cpp test()).

    caffe-lite test -model M -weights W [-iterations 50] [-phase TEST|TRAIN] [-level N]
                    [-stage s1,s2] [-gpu ids] [-strict]

Runs `iterations` forward passes and logs every batch's outputs ("Batch i, name = v"), the mean
loss ("Loss: x") and the mean of every output ("name = v", with "(* w = l loss)" for loss
outputs), as Caffe does. A progress bar appears only when stderr is a terminal.
"""
import sys

import numpy as np

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..errors import CaffeError
from ..log import LOG
from ..solvers.base import _outputs, fmt, _loss_note
from ..solvers.progress import ProgressBar
from ..common import TEST
from .netflags import (MAX_MEMORY_FLAG, STRICT_FLAG, net_from_flags, net_memory_limit,
                       strict_fork_fields)

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "The trained weights (caffemodel, or several separated by ',')."),
    Flag("iterations", 50, int, "The number of iterations to run."),
    Flag("phase", "", str, "Optional; network phase (TRAIN or TEST); TEST by default."),
    Flag("level", 0, int, "Optional; network level."),
    Flag("stage", "", str, "Optional; network stages, separated by ','."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    MAX_MEMORY_FLAG,
    STRICT_FLAG,
]


@command("test", "score a model", "-model MODEL -weights WEIGHTS [flags]")
def test(argv):
    values, positional = parse_flags(argv, FLAGS)
    with strict_fork_fields(values["strict"]), net_memory_limit(values["max_memory"]):
        return _test(values, positional)


def _test(values, positional):
    if positional:
        raise unexpected_argument(positional, 0)
    if not values["model"]:
        raise CaffeError("Need a model definition to score (-model).")
    if not values["weights"]:
        raise CaffeError("Need model weights to score (-weights).")
    net = net_from_flags(values, TEST)
    net.forward_only = True         # scoring: no backward follows (Net's forward_only)
    iterations = values["iterations"]
    LOG.info("Running for %d iterations.", iterations)
    scores = None
    labels = []
    loss = np.float32(0)
    with ProgressBar.simple(iterations, sys.stderr, "test") as bar:
        for i in range(iterations):
            loss += np.float32(net.forward_prefilled())
            outs = _outputs(net)
            flat = []
            for name, weight, vals in outs:
                for v in vals:
                    LOG.info("Batch %d, %s = %s", i, name, fmt(v))
                    flat.append(v)
                    if i == 0:
                        labels.append((name, weight))
            flat = np.asarray(flat, np.float32)
            scores = flat if scores is None else (scores + flat).astype(np.float32)
            if bar is not None:
                bar.tick(float(loss) / (i + 1))
    loss /= np.float32(iterations)
    LOG.info("Loss: %s", fmt(loss))
    for (name, weight), score in zip(labels, scores):
        mean = np.float32(score / np.float32(iterations))
        LOG.info("%s = %s%s", name, fmt(mean), _loss_note(weight, mean))
    return 0
