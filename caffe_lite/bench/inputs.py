"""A net to benchmark without its data: data layers become Input layers fed N(0, 1).

`bench_net(path, batch)` reads a train_val or deploy prototxt in TEST phase and replaces each
data layer that the phase keeps (DATA_TYPES) by an Input layer with the same tops: the
images (batch, C, H, W), each further top (labels) (batch,). Their shape is the one the data
layer itself gives its tops: the layer is set up alone (it opens its source, reads one
record and applies its transform, crop included); when the source cannot be opened, a
transform_param.crop_size gives H = W = crop_size, with C the number of mean_values (3
when there is none or one: crop_size nets are colour nets; a warning says so), and without
a crop_size it is an error that asks for a deploy net. An Input layer (a legacy `input_dim`
net is one after the upgrade) keeps its shapes with dim 0 set to the batch. batch 0 keeps
the model's own.

`fill_inputs` then writes N(0, 1) into the image tops and class indices in [0, classes)
into the label tops, classes being the last InnerProduct's num_output (so SoftmaxWithLoss
and Accuracy of a train_val net run on valid labels).
"""
import numpy as np

from ..common import TEST
from ..errors import CaffeError
from ..io.netstate import layer_included
from ..io.prototxt import read_net_param
from ..log import LOG
from ..proto import caffe_pb2

DATA_TYPES = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData")


def bench_net(path, batch=0):
    """(Net in TEST phase, label top names) of the prototxt at `path`, data layers replaced."""
    from ..net import Net
    param, lines = read_net_param(path, with_lines=True)
    state = caffe_pb2.NetState()
    state.CopyFrom(param.state)
    state.phase = TEST
    labels = []
    for lp, line in zip(param.layer, lines):
        if not layer_included(lp, state, (path, line)):
            continue
        if lp.type == "Input":
            for shape in lp.input_param.shape:
                if batch and len(shape.dim):
                    shape.dim[0] = batch
        elif lp.type in DATA_TYPES:
            shapes = _data_shapes(lp, path, line)
            own = shapes[0][0] if shapes[0] else 1
            _make_input(lp, [(batch or own,) + tuple(s[1:]) for s in shapes[:1]]
                        + [(batch or own,)] * (len(shapes) - 1))
            labels += list(lp.top[1:])
    net = Net(param=param, phase=TEST, source=(path, lines))
    return net, labels


def _make_input(lp, shapes):
    name, tops = lp.name, list(lp.top)
    lp.Clear()
    lp.name, lp.type = name, "Input"
    lp.top.extend(tops)
    for dims in shapes:
        lp.input_param.shape.add().dim.extend(int(d) for d in dims)


def _data_shapes(lp, path, line):
    """Top shapes of data layer `lp`, its own batch first: the layer's own, else from
    crop_size (module docstring)."""
    from ..net import Net
    probe = caffe_pb2.NetParameter(name="probe")
    alone = probe.layer.add()
    alone.CopyFrom(lp)
    alone.ClearField("include")
    alone.ClearField("exclude")
    try:
        net = Net(param=probe, phase=TEST)
        return [tuple(b.shape) for b in net.top_vecs[0]]
    except (CaffeError, OSError) as err:
        failure = getattr(err, "bare_message", str(err))
    if f"layer '{lp.name}'" not in failure:
        failure = f"layer '{lp.name}' ({lp.type}): {failure}"
    t = lp.transform_param
    if not t.crop_size:
        raise CaffeError(f"{failure}; the input shape comes from the source: build the data, "
                         f"or give a deploy net (Input layer) or a transform_param.crop_size",
                         path, line)
    channels = len(t.mean_value) if len(t.mean_value) > 1 else 3
    LOG.warning("%s; input shape from crop_size: %d x %d x %d%s", failure, channels,
                t.crop_size, t.crop_size, "" if len(t.mean_value) > 1 else
                " (3 channels assumed: no mean_value per channel)")
    batch = _own_batch(lp)
    return [(batch, channels, t.crop_size, t.crop_size)] + [(batch,)] * (len(lp.top) - 1)


def _own_batch(lp):
    for field in ("data_param", "image_data_param", "hdf5_data_param", "memory_data_param",
                  "window_data_param"):
        if lp.HasField(field) and getattr(lp, field).batch_size:
            return getattr(lp, field).batch_size
    return 1


def fill_inputs(net, labels, rng):
    """N(0, 1) images and valid class indices in the net's input blobs (module docstring)."""
    classes = [layer.num_output for layer in net.layers if layer.type == "InnerProduct"]
    classes = classes[-1] if classes else 1
    for name in net.inputs:
        blob = net.blobs[name].data
        if name in labels:
            blob[...] = rng.integers(0, classes, blob.shape)
        else:
            blob[...] = rng.standard_normal(blob.shape, dtype=np.float32)
