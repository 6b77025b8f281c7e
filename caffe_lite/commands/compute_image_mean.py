"""`caffe-lite compute_image_mean [-backend lmdb] INPUT_DB [OUTPUT_FILE]`: Caffe's
tools/compute_image_mean.cpp. Writes the per-pixel mean as a BlobProto (1 x C x H x W) and
logs the per-channel means ("Number of channels: C", "mean_value channel [c]: v"), which
can serve as transform_param mean_value entries. Encoded Datums are decoded natively.
"""
import numpy as np

from ..cli import Flag, command, parse_flags, usage_line
from ..data.db import open_reader
from ..data.mean import compute_mean, mean_blob_proto
from ..errors import CaffeError
from ..log import LOG

FLAGS = [Flag("backend", "lmdb", str, "The backend {leveldb, lmdb} containing the images.")]


def _counted(values):
    count = 0
    for value in values:
        yield value
        count += 1
        if count % 10000 == 0:
            LOG.info("Processed %d files.", count)
    if count % 10000 != 0:
        LOG.info("Processed %d files.", count)


def channel_means(mean):
    """Per-channel averages of a (C, H, W) mean, summed in float32 as Caffe does."""
    flat = np.asarray(mean, np.float32).reshape(mean.shape[0], -1)
    return [float(np.float32(np.sum(row, dtype=np.float32) / np.float32(row.size)))
            for row in flat]


def compute_image_mean(db_path, output=None, backend="lmdb"):
    reader = open_reader(db_path, backend)
    LOG.info("Starting iteration")
    try:
        mean = compute_mean(_counted(value for _, value in reader.items()))
    except CaffeError as err:
        if err.path is not None:
            raise
        raise CaffeError(str(err), db_path) from None
    if output:
        from ..io.binary import write_binary
        LOG.info("Write to %s", output)
        write_binary(output, mean_blob_proto(mean))
    LOG.info("Number of channels: %d", mean.shape[0])
    values = channel_means(mean)
    for c, v in enumerate(values):
        LOG.info("mean_value channel [%d]: %g", c, v)
    return mean, values


@command("compute_image_mean", "per-pixel mean of a database -> binaryproto",
         "[-backend lmdb] INPUT_DB [OUTPUT_FILE]")
def compute_image_mean_command(argv):
    values, positional = parse_flags(argv, FLAGS)
    if not 1 <= len(positional) <= 2:
        raise CaffeError(usage_line("compute_image_mean"))
    compute_image_mean(positional[0], positional[1] if len(positional) == 2 else None,
                       values["backend"])
    return 0
