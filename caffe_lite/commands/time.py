"""`caffe-lite time`: benchmark a model's execution time (tools/caffe.cpp time()).

    caffe-lite time -model M [-weights W] [-iterations 50] [-phase TRAIN|TEST] [-level N]
                    [-stage s1,s2] [-gpu ids] [-strict]

One clean forward and backward first (so allocations are done), then `iterations` passes
timing every layer's forward and backward; logs Caffe's lines: "Iteration: i forward-backward
time: X ms.", per layer "<name>\tforward: X ms." / "<name>\tbackward: Y ms.", then "Average
Forward pass", "Average Backward pass", "Average Forward-Backward" and "Total Time". As in
Caffe, the net is fed whatever its input blobs hold and every layer's backward is timed.
"""
import time

from ..cli import Flag, command, parse_flags, unexpected_argument
from ..errors import CaffeError
from ..log import LOG
from ..kernels.gemm import blas_single_threaded
from ..common import TRAIN
from .netflags import (MAX_MEMORY_FLAG, STRICT_FLAG, net_from_flags, net_memory_limit,
                       strict_fork_fields)

FLAGS = [
    Flag("model", "", str, "The model definition protocol buffer text file."),
    Flag("weights", "", str, "Optional; trained weights to load (caffemodel, or several "
                             "separated by ',')."),
    Flag("iterations", 50, int, "The number of iterations to run."),
    Flag("phase", "", str, "Optional; network phase (TRAIN or TEST); TRAIN by default."),
    Flag("level", 0, int, "Optional; network level."),
    Flag("stage", "", str, "Optional; network stages, separated by ','."),
    Flag("gpu", "", str, "Accepted for compatibility; caffe-lite runs on the CPU."),
    MAX_MEMORY_FLAG,
    STRICT_FLAG,
]


def _ms(seconds):
    return seconds * 1000.0


@command("time", "benchmark model execution time", "-model MODEL [flags]")
def time_command(argv):
    values, positional = parse_flags(argv, FLAGS)
    with strict_fork_fields(values["strict"]), net_memory_limit(values["max_memory"]):
        return _time(values, positional)


def _time(values, positional):
    if positional:
        raise unexpected_argument(positional, 0)
    if not values["model"]:
        raise CaffeError("Need a model definition to time (-model).")
    net = net_from_flags(values, TRAIN)
    iterations = values["iterations"]

    LOG.info("Performing Forward")
    initial_loss = net.forward_prefilled()
    LOG.info("Initial loss: %g", initial_loss)
    LOG.info("Performing Backward")
    net.backward_all()

    LOG.info("*** Benchmark begins ***")
    LOG.info("Testing for %d iterations.", iterations)
    clock = time.perf_counter
    total_start = clock()
    with blas_single_threaded():        # as in training: OpenBLAS never spins between layers
        forward_per_layer, backward_per_layer, forward_time, backward_time = _benchmark(
            net, iterations)
    LOG.info("Average time per layer: ")
    for i, name in enumerate(net.layer_names):
        LOG.info("%10s\tforward: %g ms.", name, _ms(forward_per_layer[i]) / iterations)
        LOG.info("%10s\tbackward: %g ms.", name, _ms(backward_per_layer[i]) / iterations)
    total = clock() - total_start
    LOG.info("Average Forward pass: %g ms.", _ms(forward_time) / iterations)
    LOG.info("Average Backward pass: %g ms.", _ms(backward_time) / iterations)
    LOG.info("Average Forward-Backward: %g ms.", _ms(total) / iterations)
    LOG.info("Total Time: %g ms.", _ms(total))
    LOG.info("*** Benchmark ends ***")
    return 0


def _benchmark(net, iterations):
    """Per-layer forward and backward seconds (summed over iterations), and the pass totals."""
    layers, bottoms, tops = net.layers, net.bottom_vecs, net.top_vecs
    need = net.bottom_need_backward
    hooks = net.forward_hooks        # quantization must cost in `time` what it costs in training
    clock = time.perf_counter
    forward_per_layer = [0.0] * len(layers)
    backward_per_layer = [0.0] * len(layers)
    forward_time = backward_time = 0.0
    for j in range(iterations):
        iter_start = clock()
        for hook in hooks:
            hook.before_forward(net)
        for i, layer in enumerate(layers):
            t = clock()
            try:
                layer.forward(bottoms[i], tops[i])
            except CaffeError as err:
                raise net.pass_error(i, err) from None
            for hook in hooks:
                hook.after_layer(net, i)
            forward_per_layer[i] += clock() - t
        forward_end = clock()
        forward_time += forward_end - iter_start
        for i in range(len(layers) - 1, -1, -1):
            t = clock()
            layers[i].backward(tops[i], need[i], bottoms[i])
            backward_per_layer[i] += clock() - t
        backward_time += clock() - forward_end
        LOG.info("Iteration: %d forward-backward time: %g ms.", j + 1,
                 _ms(clock() - iter_start))
    return forward_per_layer, backward_per_layer, forward_time, backward_time
