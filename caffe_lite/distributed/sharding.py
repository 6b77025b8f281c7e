"""Each rank reads its own share of the training data, as Caffe's shared DataReader hands it
out: rank r of N takes batches r, r + N, r + 2N, ... of the stream that one reader would
read (layers/base_data.py: set_share; Data, ImageData and HDF5Data have it). One iteration of
N ranks so reads the N batches that one process with iter_size N reads in one iteration,
shuffled orders included (every rank draws the same permutation from the same seed and takes
its own batches of it), and the random transforms of a batch are drawn from its position in
the stream, so every rank gets its own. The test nets (rank 0 alone tests) read everything.
"""
from ..log import LOG

# data sources without a share: every rank would read the same batches
_SOURCE_TYPES = ("DummyData", "MemoryData", "Input")


def share_training_data(net, rank, size):
    """Give every data layer of the train net its share; warn (rank 0) for the others."""
    for name, layer in zip(net.layer_names, net.layers):
        set_share = getattr(layer, "set_share", None)
        if set_share is not None:
            set_share(rank, size)
        elif layer.type in _SOURCE_TYPES and rank == 0:
            LOG.warning("layer '%s' (%s) cannot split its data over the ranks: every rank "
                        "trains on the same batches", name, layer.type)
