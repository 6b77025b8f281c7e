"""Two nets of the same prototxt, one with an optimisation and one without, hold the same
bits: every blob's data and diff, every parameter's data and diff (a NaN anywhere fails)."""
import numpy as np


def assert_same_bits(net, plain):
    for name in plain.blobs:
        assert np.array_equal(net.blobs[name].data, plain.blobs[name].data), name
        assert np.array_equal(net.blobs[name].diff, plain.blobs[name].diff), name
    for name, blobs in plain.params.items():
        for blob, twin in zip(net.params[name], blobs):
            assert np.array_equal(blob.data, twin.data), name
            assert np.array_equal(blob.diff, twin.diff), name
