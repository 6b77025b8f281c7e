"""pycaffe's conveniences over the Net (python/caffe/pycaffe.py), so scripts written for
`import caffe` run with `import caffe_lite as caffe`.

  out = net.forward(data=x)            # {output name: data array}, arrays are the blobs' own
  net.forward(start='conv1', end='fc') # partial passes by layer name, inclusive
  grads = net.backward(**{net.outputs[0]: g})
  net.blobs['conv1'].data, net.params['conv1'][0].diff, net.layer_dict['conv1'].blobs
  net.inputs, net.outputs, net.top_names, net.bottom_names, net.blob_loss_weights
As in pycaffe, keyword inputs must name exactly the net inputs (outputs for backward) and
match their batch size; the returned arrays alias the blobs, so copy them to keep them.
"""
from collections import OrderedDict

import numpy as np

from .errors import CaffeError


class PycaffeNet:
    """Mixin: needs layers, layer_names, blobs, inputs, outputs, top_id_vecs,
    bottom_id_vecs, _blob_names, _blob_loss_weights, _forward, _backward, backward_all."""

    @property
    def _layer_names(self):
        return self.layer_names

    @property
    def top_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self.layer_names, self.top_id_vecs))

    @property
    def bottom_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self.layer_names, self.bottom_id_vecs))

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    def _layer_index(self, name):
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise CaffeError(f"net '{self.name}' has no layer '{name}'") from None

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Forward from `start` to `end` (layer names, inclusive); keyword arguments set the
        input blobs first. Returns {name: data} for the outputs (or `end`'s tops) plus
        `blobs`."""
        blobs = list(blobs or [])
        start_ind = 0 if start is None else self._layer_index(start)
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise CaffeError(f"Input blob arguments do not match net inputs: got "
                                 f"{sorted(kwargs)}, net inputs are {self.inputs}")
            for name, value in kwargs.items():
                value = np.asarray(value)
                if value.ndim == 0 or value.shape[0] != self.blobs[name].shape[0]:
                    raise CaffeError(f"Input '{name}' is not batch sized: shape {value.shape}, "
                                     f"blob shape {self.blobs[name].shape}")
                self.blobs[name].data[...] = value
        if start_ind == 0 and end_ind == len(self.layers) - 1:
            self.forward_prefilled()
        else:
            self._forward(start_ind, end_ind)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Backward from `start` down to `end` (layer names, inclusive); keyword arguments set
        the output diffs first. Returns {name: diff} for the inputs (or `end`'s bottoms) plus
        `diffs`."""
        diffs = list(diffs or [])
        start_ind = len(self.layers) - 1 if start is None else self._layer_index(start)
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise CaffeError(f"Top diff arguments do not match net outputs: got "
                                 f"{sorted(kwargs)}, net outputs are {self.outputs}")
            for name, value in kwargs.items():
                value = np.asarray(value)
                if value.ndim == 0 or value.shape[0] != self.blobs[name].shape[0]:
                    raise CaffeError(f"Diff '{name}' is not batch sized: shape {value.shape}, "
                                     f"blob shape {self.blobs[name].shape}")
                self.blobs[name].diff[...] = value
        if start_ind == len(self.layers) - 1 and end_ind == 0:
            self.backward_all()
        else:
            self._backward(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in outputs}

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData first layer from arrays (pycaffe's Net.set_input_arrays)."""
        from .layers.memory_data import set_input_arrays
        return set_input_arrays(self, data, labels)

    def forward_all(self, blobs=None, **kwargs):
        """Forward whole batches of inputs through the net; returns {output: stacked data}."""
        outs = {name: [] for name in set(self.outputs + list(blobs or []))}
        n = len(next(iter(kwargs.values()))) if kwargs else self.blobs[self.inputs[0]].shape[0]
        batch = self.blobs[self.inputs[0]].shape[0] if self.inputs else n
        for i in range(0, n, batch):
            chunk = {}
            for name, value in kwargs.items():
                part = np.asarray(value[i:i + batch])
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], part.dtype)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            result = self.forward(blobs=blobs, **chunk)
            for name in outs:
                outs[name].extend(result[name].copy())
        return {name: np.asarray(v[:n]) for name, v in outs.items()}
