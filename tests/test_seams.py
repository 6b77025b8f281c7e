"""The seams the compression forks plug into (docs/ARCHITECTURE.md, "Seams for the forks"):
state blobs, effective weights, convolution engines by conv_mode, and solver hooks.

A masked InnerProduct made here (DNS's shape: [W, b, mask W, mask b], masks as state blobs
that a dense caffemodel may lack) exercises the layer side end to end; a recording hook and
a spy engine exercise the solver and convolution sides.
"""
import os

import numpy as np
import pytest

from caffe_lite import layers as layer_registry
from caffe_lite.errors import CaffeError
from caffe_lite.kernels import conv_engines
from caffe_lite.layers.inner_product import InnerProductLayer
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2
from caffe_lite.solvers import ParamHook, get_solver, hooks
from gradcheck import assert_f32_sum_close

F32_EPS = float(np.finfo(np.float32).eps)


class MaskedInnerProduct(InnerProductLayer):
    """InnerProduct with element masks for weight and bias (1 keeps, 0 prunes)."""
    optional_blobs_from = 2

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        if len(self.blobs) == 2:
            for blob in list(self.blobs):
                mask = self.make_blob(blob.shape)
                mask.data[...] = 1
                self.blobs.append(mask)
        self.state_blobs = frozenset({2, 3})

    def effective_weight(self):
        return self.blobs[0].data * self.blobs[2].data

    def effective_bias(self):
        return self.blobs[1].data * self.blobs[3].data


@pytest.fixture
def masked_type():
    layer_registry._load_all()
    layer_registry.register("TestMaskedInnerProduct")(MaskedInnerProduct)
    yield "TestMaskedInnerProduct"
    layer_registry.LAYERS.pop("TestMaskedInnerProduct")


def net_text(ip_type="InnerProduct", params=""):
    return f'''name: "seams"
layer {{ name: "data" type: "DummyData" top: "x" top: "label"
  dummy_data_param {{ shape {{ dim: 4 dim: 6 }} shape {{ dim: 4 }}
    data_filler {{ type: "constant" value: 0.5 }} data_filler {{ type: "constant" value: 1 }} }} }}
layer {{ name: "ip" type: "{ip_type}" bottom: "x" top: "ip" {params}
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 1 }}
    bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
'''


def write_solver(tmp_path, text, extra=""):
    (tmp_path / "net.prototxt").write_text(text)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 momentum: 0.9 '
                    f'weight_decay: 0.1 lr_policy: "fixed" max_iter: 10 display: 0 '
                    f'snapshot_after_train: false random_seed: 7 {extra}')
    return str(path)


# --- state blobs and effective weights ---------------------------------------------------

def test_masked_layer_forward_uses_effective_weights(tmp_path, masked_type):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text(masked_type))
    net = Net(str(path), phase=caffe_pb2.TRAIN)
    w, b, mw, mb = net.params["ip"]
    mw.data[0] = 0
    mb.data[1] = 0
    net.forward()
    x = net.blobs["x"].data
    weight, bias = (w.data * mw.data).astype(np.float64), (b.data * mb.data).astype(np.float64)
    expected = x @ weight.T + bias
    magnitude = np.abs(x) @ np.abs(weight).T + np.abs(bias)
    assert_f32_sum_close(net.blobs["ip"].data, expected, magnitude, 6 + 1)
    assert net.learnable_is_state == [False, False, True, True]
    assert net.layers[1].param_propagate_down == [True, True, False, False]


def test_masks_load_save_and_dense_models(tmp_path, masked_type):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text(masked_type))
    dense_path = tmp_path / "dense.prototxt"
    dense_path.write_text(net_text())
    dense = Net(str(dense_path), phase=caffe_pb2.TEST)
    dense.save(tmp_path / "dense.caffemodel")
    masked = Net(str(path), phase=caffe_pb2.TEST)
    masked.params["ip"][2].data[...] = 0          # will the load keep them?
    masked.copy_from(tmp_path / "dense.caffemodel")
    np.testing.assert_array_equal(masked.params["ip"][0].data, dense.params["ip"][0].data)
    assert not masked.params["ip"][2].data.any()   # a dense model leaves the masks alone
    masked.params["ip"][2].data[1] = 1
    masked.save(tmp_path / "masked.caffemodel")
    again = Net(str(path), phase=caffe_pb2.TEST, weights=str(tmp_path / "masked.caffemodel"))
    for a, b in zip(again.params["ip"], masked.params["ip"]):
        np.testing.assert_array_equal(a.data, b.data)
    # fewer blobs than the layer's required ones: an error at the prototxt's layer line
    one = caffe_pb2.NetParameter()
    one.layer.add(name="ip").blobs.add().CopyFrom(masked.to_proto().layer[1].blobs[0])
    with pytest.raises(CaffeError) as err:
        again.copy_trained_layers_from(one, source="one.caffemodel")
    assert str(err.value).startswith(f"{path}:5: layer 'ip' ({masked_type}): Incompatible "
                                     "number of blobs for layer ip (from one.caffemodel): "
                                     "source has 1, target has 4")


def test_solver_never_updates_state_blobs_but_keeps_their_history(tmp_path, masked_type):
    solver = get_solver(write_solver(
        tmp_path, net_text(masked_type, "param { lr_mult: 1 } " * 4)))
    w, b, mw, mb = solver.net.params["ip"]
    mw.data[0] = 0
    masks = (mw.data.copy(), mb.data.copy())
    start = w.data.copy()
    solver.step(2)
    np.testing.assert_array_equal(mw.data, masks[0])
    np.testing.assert_array_equal(mb.data, masks[1])
    assert len(solver.history) == 4 and not solver.history[2].any()
    # the weight gradient is dense: pruned weights keep training (DNS's splicing)
    assert np.all(w.data[0] != start[0])
    assert [p.index for p in solver.params] == [0, 1]


def test_weights_shape_mismatch_names_prototxt_line(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text())
    other = tmp_path / "other.prototxt"
    other.write_text(net_text().replace("num_output: 3", "num_output: 5"))
    Net(str(other), phase=caffe_pb2.TEST).save(tmp_path / "other.caffemodel")
    with pytest.raises(CaffeError) as err:
        Net(str(path), phase=caffe_pb2.TEST, weights=str(tmp_path / "other.caffemodel"))
    message = str(err.value)
    assert message.startswith(f"{path}:5: layer 'ip' (InnerProduct): Cannot copy param 0 "
                              f"weights from layer 'ip' (from {tmp_path / 'other.caffemodel'})")
    assert "Source param shape is 5 6 (30); target param shape is 3 6 (18)" in message


# --- convolution engines -----------------------------------------------------------------

CONV_NET = '''name: "conv"
input: "x" input_shape { dim: 2 dim: 3 dim: 7 dim: 7 }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 %s
    weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
'''


class SpyEngine(conv_engines.LoweredGemmEngine):
    calls = []

    def forward(self, x, w, bias, geo, y):
        self.calls.append(("forward", x.shape))
        super().forward(x, w, bias, geo, y)

    def backward(self, x, w, dy, geo, dx=None, dw=None, db=None):
        self.calls.append(("backward", dy.shape))
        super().backward(x, w, dy, geo, dx=dx, dw=dw, db=db)


def conv_net(tmp_path, mode):
    path = tmp_path / f"conv_{mode}.prototxt"
    path.write_text(CONV_NET % (f"conv_mode: {mode}" if mode else ""))
    net = Net(str(path), phase=caffe_pb2.TRAIN)
    net.params["conv"][0].data[...] = np.arange(108).reshape(4, 3, 3, 3) % 7 - 3
    net.params["conv"][1].data[...] = np.arange(4) - 1.5
    net.blobs["x"].data[...] = np.arange(294).reshape(2, 3, 7, 7) % 5 - 2
    return net


def test_conv_mode_picks_the_engine_from_the_table(tmp_path, monkeypatch):
    monkeypatch.setitem(conv_engines.CONV_ENGINES, "DIRECT_SCONV", SpyEngine)
    SpyEngine.calls = []
    net = conv_net(tmp_path, "DIRECT_SCONV")
    assert isinstance(net.layers[1].engine, SpyEngine)
    net.forward()
    net.blobs["y"].diff[...] = 1
    net.layers[1].backward(net.top_vecs[1], [True], net.bottom_vecs[1])
    assert SpyEngine.calls == [("forward", (2, 3, 7, 7)), ("backward", (2, 4, 7, 7))]
    dense = conv_net(tmp_path, "")
    dense.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, dense.blobs["y"].data)


def test_conv_mode_without_an_engine_runs_lowered_gemm(tmp_path, monkeypatch):
    monkeypatch.delitem(conv_engines.CONV_ENGINES, "LOWERED_CCNMM", raising=False)
    net = conv_net(tmp_path, "LOWERED_CCNMM")
    assert type(net.layers[1].engine) is conv_engines.LoweredGemmEngine


# --- solver hooks ------------------------------------------------------------------------

class Recorder(ParamHook):
    """Adds 1 to every gradient, doubles the weights' lr_mult, freezes row 0 of the weight
    update, and zeroes weights below 0.05 after the update."""

    def __init__(self):
        self.calls = []

    def regularize(self, param, it):
        self.calls.append(("regularize", param.name, it, param.spec.lr_mult,
                           param.layer.type))
        param.diff[...] += np.float32(1)

    def lr_mult(self, param, lr_mult, it):
        return lr_mult * 2 if param.blob_index == 0 else lr_mult

    def update_value(self, param, it):
        self.calls.append(("update_value", param.name, it))
        if param.blob_index == 0:
            param.diff[0] = 0

    def after_update(self, param, it):
        self.calls.append(("after_update", param.name, it))
        param.data[np.abs(param.data) < np.float32(0.05)] = 0

    def after_step(self, params, it):
        self.calls.append(("after_step", [p.name for p in params], it))


def test_hooks_get_each_param_with_its_spec_in_caffe_order(tmp_path):
    solver = get_solver(write_solver(
        tmp_path, net_text(params="param { lr_mult: 1 } param { lr_mult: 2 }")))
    hook = solver.add_hook(Recorder())
    net = solver.net
    w, b = net.params["ip"]
    w0, b0 = w.data.copy(), b.data.copy()
    net.clear_param_diffs()
    net.forward_backward()          # constant data: the step sees the same gradient
    gw, gb = w.diff.copy(), b.diff.copy()
    solver.step(1)
    f = np.float32
    for data0, grad, lr_mult, index in ((w0, gw, 2 * 1, 0), (b0, gb, 2, 1)):
        g = grad + f(0.1) * data0          # weight decay 0.1, decay_mult 1
        g = g + f(1)                       # the hook's regularize
        v = f(f(0.1) * f(lr_mult)) * g     # momentum history starts at 0
        if index == 0:
            v[0] = 0
        expected = data0 - v
        expected[np.abs(expected) < f(0.05)] = 0
        blob = net.params["ip"][index]
        np.testing.assert_allclose(blob.data, expected, rtol=4 * F32_EPS, atol=4 * F32_EPS)
    assert hook.calls == [
        ("regularize", "ip[0]", 0, 1.0, "InnerProduct"), ("update_value", "ip[0]", 0),
        ("regularize", "ip[1]", 0, 2.0, "InnerProduct"), ("update_value", "ip[1]", 0),
        ("after_update", "ip[0]", 0), ("after_update", "ip[1]", 0),
        ("after_step", ["ip[0]", "ip[1]"], 0)]
    np.testing.assert_array_equal(solver.params[0].history[0], solver.history[0])


def test_hook_factories_see_the_solver_param(tmp_path, masked_type):
    seen = []

    def factory(solver_param):
        seen.append(solver_param.base_lr)
        return Recorder() if solver_param.weight_decay else None

    hooks.hook_factory(factory)
    try:
        solver = get_solver(write_solver(tmp_path, net_text(masked_type)))
    finally:
        hooks.HOOK_FACTORIES.remove(factory)
    assert seen == [pytest.approx(0.1)]
    (hook,) = [h for h in solver.hooks if isinstance(h, Recorder)]
    solver.step(1)
    # state blobs (the masks) never reach a hook
    assert {c[1] for c in hook.calls if c[0] == "regularize"} == {"ip[0]", "ip[1]"}


def test_set_update_mask_freezes_entries_and_history(tmp_path):
    solver = get_solver(write_solver(tmp_path, net_text()))
    w = solver.net.params["ip"][0]
    start = w.data.copy()
    mask = np.ones(w.shape, np.float32)
    mask[1] = 0
    solver.set_update_mask(w, mask, history=True)
    solver.step(2)
    np.testing.assert_array_equal(w.data[1], start[1])
    assert not solver.history[0][1].any()
    assert np.all(w.data[0] != start[0])
    solver.set_update_mask(w, None)
    solver.step(1)
    assert np.all(w.data[1] != start[1])


# --- hook start, state through resume, snapshots; net forward hooks; param transforms ----

class Stateful(ParamHook):
    state_key = "test-stateful"

    def __init__(self):
        self.starts = []
        self.snapshots = []
        self.count = 0

    def start(self, params, it, nets):
        self.starts.append((it, [p.name for p in params], len(nets)))

    def after_step(self, params, it):
        self.count += 1

    def get_state(self):
        return {"count": self.count}

    def set_state(self, state):
        self.count = state["count"]

    def after_snapshot(self, net, model_path, it):
        self.snapshots.append((model_path, it, os.path.isfile(model_path)))


def test_hook_start_runs_once_and_state_survives_resume(tmp_path):
    prefix = tmp_path / "snap"
    path = write_solver(tmp_path, net_text(), f'snapshot: 3 snapshot_prefix: "{prefix}"')
    solver = get_solver(path)
    hook = solver.add_hook(Stateful())
    solver.step(2)
    solver.step(1)
    assert hook.starts == [(0, ["ip[0]", "ip[1]"], 1)]
    model = f"{prefix}_iter_3.caffemodel"
    assert hook.snapshots == [(model, 3, True)]

    resumed = get_solver(path)
    again = resumed.add_hook(Stateful())
    resumed.restore(f"{prefix}_iter_3.solverstate")
    assert again.count == 3
    resumed.step(1)
    assert again.starts == [(3, ["ip[0]", "ip[1]"], 1)] and again.count == 4


class Rounder:
    """A net hook that records the passes and rounds the `ip` top to integers."""

    def __init__(self):
        self.events = []

    def attach(self, net):
        self.events.append("attach")

    def before_forward(self, net):
        self.events.append("before")

    def after_layer(self, net, layer_id):
        rec = net._layer_records[layer_id]
        if rec.name == "ip":
            np.round(rec.tops[0].data, out=rec.tops[0].data)


def test_net_forward_hooks_see_each_layer_and_may_change_tops(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text())
    net = Net(str(path), 0)
    hook = net.add_forward_hook(Rounder())
    net.forward()
    ip = net.blobs["ip"].data
    np.testing.assert_array_equal(ip, np.round(ip))
    net.forward(start="loss")            # a pass that does not start at layer 0
    assert hook.events == ["attach", "before"]


def test_net_hook_factories_see_the_filtered_param(tmp_path):
    from caffe_lite import net_hooks
    seen = []

    def factory(net_param):
        seen.append(net_param.state.phase)
        return Rounder() if net_param.state.phase == 1 else None

    net_hooks.net_hook_factory(factory)
    try:
        path = tmp_path / "net.prototxt"
        path.write_text(net_text())
        train, test = Net(str(path), 0), Net(str(path), 1)
    finally:
        net_hooks.HOOK_FACTORIES.remove(factory)
    assert seen == [0, 1]
    assert train.forward_hooks == [] and len(test.forward_hooks) == 1


def test_param_transform_feeds_forward_and_backward_but_not_the_blobs(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(net_text())
    net = Net(str(path), 0)
    layer = net.layer_by_name("ip")
    w, b = (blob.data.copy() for blob in layer.blobs)
    layer.param_transform = lambda i, a: np.zeros_like(a) if i == 0 else a + 1
    net.forward()
    np.testing.assert_array_equal(net.blobs["ip"].data, np.broadcast_to(b + 1, (4, 3)))
    net.backward()
    # the gradients land in the float blobs themselves (straight through the transform)
    assert layer.blobs[0].diff.any() and layer.blobs[1].diff.any()
    np.testing.assert_array_equal(layer.blobs[0].data, w)
