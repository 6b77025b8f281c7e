"""The Net: graph building (splits, in-place, auto tops), backward bookkeeping, loss weights,
parameter sharing, NetState filtering, weights in and out, and the pycaffe surface.

The small nets use layers the net relies on (Input, DummyData, Split, Silence) and simple
ones (Parameter, Eltwise, Reduction, Clip); the last tests use InnerProduct, ReLU and
SoftmaxWithLoss.
"""
import logging

import numpy as np
import pytest
from google.protobuf import text_format

import caffe_lite as caffe
from caffe_lite.errors import CaffeError
from caffe_lite.log import LOG
from caffe_lite.net import Net, insert_splits
from caffe_lite.proto import caffe_pb2


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def net_param(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


class Logs(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))

    def __enter__(self):
        self._level = LOG.level
        LOG.addHandler(self)
        LOG.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        LOG.removeHandler(self)
        LOG.setLevel(self._level)

    def text(self):
        return "\n".join(m for _, m in self.lines)


# x (2x3) times a learnable w (2x3), summed: loss = 2 * sum(x * w); a second branch reads x.
PROD_NET = """
name: "prod"
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 } } }
layer { name: "prod" type: "Eltwise" bottom: "x" bottom: "w" top: "p"
        eltwise_param { operation: PROD } }
layer { name: "loss" type: "Reduction" bottom: "p" top: "loss" loss_weight: 2 }
layer { name: "other" type: "Clip" bottom: "x" top: "c" clip_param { min: -1 max: 1 } }
"""


def prod_net(**kw):
    net = Net(param=net_param(PROD_NET), **kw)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.standard_normal((2, 3))
    net.params["w"][0].data[...] = rng.standard_normal((2, 3))
    return net


# --- graph building ----------------------------------------------------------------------
def test_split_inserted_for_a_shared_blob():
    net = prod_net()
    assert net.layer_names == ["data", "x_data_0_split", "w", "prod", "loss", "other"]
    assert net.bottom_names["prod"] == ["x_data_0_split_0", "w"]
    assert net.bottom_names["other"] == ["x_data_0_split_1"]
    assert net.layer_dict["x_data_0_split"].type == "Split"
    net.forward()
    for name in ("x_data_0_split_0", "x_data_0_split_1"):
        assert np.shares_memory(net.blobs[name].data, net.blobs["x"].data)


def test_split_names_follow_the_last_producer_of_an_in_place_blob():
    param = net_param("""
      layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 2 } } }
      layer { name: "clip" type: "Clip" bottom: "a" top: "a" clip_param { min: 0 max: 1 } }
      layer { name: "s" type: "Silence" bottom: "a" }
      layer { name: "t" type: "Silence" bottom: "a" }""")
    out, origin = insert_splits(param)
    assert [lp.name for lp in out.layer] == ["in", "clip", "a_clip_0_split", "s", "t"]
    assert list(out.layer[2].top) == ["a_clip_0_split_0", "a_clip_0_split_1"]
    assert origin == [0, 1, None, 2, 3]


def test_split_carries_the_loss_weight_of_a_consumed_loss_top():
    net = Net(param=net_param("""
      layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 3 } } }
      layer { name: "r" type: "Reduction" bottom: "a" top: "l" loss_weight: 3 }
      layer { name: "c" type: "Clip" bottom: "l" top: "c" clip_param { min: 0 max: 1 } }"""))
    split = net.layer_dict["l_r_0_split"]
    assert list(split.param.loss_weight) == [3, 0]
    assert len(net.layer_dict["r"].param.loss_weight) == 0
    assert net.blob_loss_weights["l_r_0_split_0"] == 3
    net.blobs["a"].data[...] = [1, 2, 3]
    assert net.forward_prefilled() == pytest.approx(18)


def test_in_place_layer_reuses_its_bottom():
    param = net_param("""
      layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 4 } } }
      layer { name: "clip" type: "Clip" bottom: "a" top: "a" clip_param { min: 0 max: 1 } }""")
    with Logs() as logs:
        net = Net(param=param)
    assert list(net.blobs) == ["a"]
    assert net.top_vecs[1][0] is net.bottom_vecs[1][0]
    assert "clip -> a (in-place)" in logs.text()
    net.blobs["a"].data[...] = [-1, 0.5, 2, 0]
    out = net.forward()
    np.testing.assert_array_equal(out["a"], [0, 0.5, 1, 0])


def test_init_log_lines():
    with Logs() as logs:
        Net(param=net_param(PROD_NET))
    text = logs.text()
    for line in ("Creating Layer prod", "prod <- x_data_0_split_0", "prod -> p",
                 "Top shape: 2 3 (6)", "    with loss weight 2", "Setting up loss",
                 "loss needs backward computation.", "other does not need backward computation.",
                 "This network produces output c", "Network initialization done."):
        assert line in text, line


def test_duplicate_top_and_unknown_bottom_are_errors(tmp_path):
    path = write(tmp_path, """
layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }
""")
    with pytest.raises(CaffeError, match=r"net.prototxt:3: Top blob 'x' produced by multiple"):
        Net(path, caffe.TEST)
    path = write(tmp_path, """
layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "s" type: "Silence" bottom: "y" }
""")
    with pytest.raises(CaffeError, match=r":3: Unknown bottom blob 'y' \(layer 's', bottom "
                                         r"index 0\)"):
        Net(path, caffe.TEST)


def test_unknown_layer_type_names_file_line_and_known_types(tmp_path):
    path = write(tmp_path, """name: "n"
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 } } }

layer {
  name: "mystery"
  type: "FancyFork"
  bottom: "x"
}
""")
    with pytest.raises(CaffeError) as err:
        Net(path, caffe.TRAIN)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4: Unknown layer type: FancyFork (known types: ")
    assert "Input" in msg and "Split" in msg and "\n" not in msg


def test_legacy_input_fields_are_upgraded_to_an_input_layer():
    net = Net(param=net_param("""
      input: "data" input_shape { dim: 2 dim: 3 }
      layer { name: "clip" type: "Clip" bottom: "data" top: "out" clip_param { min: 0 max: 1 } }
    """), phase=caffe.TEST)
    assert net.inputs == ["data"] and net.blobs["data"].shape == (2, 3)
    assert net.layer_dict["input"].type == "Input"


def test_layer_setup_errors_carry_the_location(tmp_path):
    path = write(tmp_path, """layer { name: "in" type: "Input" top: "a" top: "b"
  input_param { shape { dim: 1 } shape { dim: 1 } shape { dim: 1 } } }
""")
    with pytest.raises(CaffeError, match=r"net.prototxt:1: layer 'in' \(Input\)"):
        Net(path, caffe.TEST)


def test_propagate_down_count_must_match():
    with pytest.raises(CaffeError, match="propagate_down"):
        Net(param=net_param("""
          layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 1 } } }
          layer { name: "r" type: "Reduction" bottom: "a" top: "l" propagate_down: true
                  propagate_down: false }"""))


# --- loss, backward ----------------------------------------------------------------------
def test_loss_weight_scales_loss_and_gradients():
    net = prod_net()
    x, w = net.blobs["x"].data.copy(), net.params["w"][0].data.copy()
    loss = net.forward_backward()
    assert loss == pytest.approx(2 * np.sum(x * w), rel=1e-6)
    np.testing.assert_allclose(net.params["w"][0].diff, 2 * x, rtol=1e-6)
    assert net.blob_loss_weights["loss"] == 2 and net.blob_loss_weights["p"] == 0
    assert net.outputs == ["c", "loss"]           # sorted, as Caffe's std::set
    assert net.inputs == ["x"]


def test_backward_flags_and_pruning():
    net = prod_net()
    need = dict(zip(net.layer_names, net.layer_need_backward))
    # Input data needs no gradient; `other` does not lead to the loss.
    assert need == {"data": False, "x_data_0_split": False, "w": True, "prod": True,
                    "loss": True, "other": False}
    assert net.bottom_need_backward[net.layer_names.index("prod")] == [False, True]
    net.forward_backward()
    assert np.all(net.blobs["x"].diff == 0)


def test_force_backward_reaches_the_inputs():
    param = net_param(PROD_NET)
    param.force_backward = True
    net = Net(param=param)
    rng = np.random.default_rng(1)
    net.blobs["x"].data[...] = x = rng.standard_normal((2, 3))
    net.params["w"][0].data[...] = w = rng.standard_normal((2, 3))
    net.forward_backward()
    assert all(net.layer_need_backward)
    np.testing.assert_allclose(net.blobs["x_data_0_split_0"].diff, 2 * w, rtol=1e-6)
    # the split sums both consumers' diffs (the Clip branch has no loss, its diff is 0)
    np.testing.assert_allclose(net.blobs["x"].diff, 2 * w, rtol=1e-6)
    np.testing.assert_allclose(net.params["w"][0].diff, 2 * x, rtol=1e-6)


def test_propagate_down_false_stops_the_gradient():
    text = PROD_NET.replace('top: "p"\n', 'top: "p" propagate_down: true '
                                          'propagate_down: false\n')
    param = net_param(text)
    param.force_backward = True
    net = Net(param=param)
    i = net.layer_names.index("prod")
    # force_backward turns on what the layer allows; Eltwise allows both
    assert net.bottom_need_backward[i] == [True, True]
    param.force_backward = False
    net = Net(param=param)
    assert net.bottom_need_backward[i] == [True, False]
    assert not net.layer_need_backward[net.layer_names.index("w")]
    net.blobs["x"].data[...] = 1
    net.forward_backward()
    assert np.all(net.params["w"][0].diff == 0)


def test_lr_mult_zero_freezes_a_parameter():
    text = PROD_NET.replace('top: "w" parameter_param', 'top: "w" param { lr_mult: 0 } '
                                                       'parameter_param')
    net = Net(param=net_param(text))
    assert net.layer_dict["w"].param_propagate_down == [False]
    assert net.params_lr == [0.0]
    assert not net.layer_need_backward[net.layer_names.index("prod")]


def test_backward_from_to_and_partial_forward():
    net = prod_net()
    net.forward(end="prod")
    assert net.blobs["loss"].data == 0
    net.forward(start="loss")
    assert float(net.blobs["loss"].data) == pytest.approx(
        np.sum(net.blobs["x"].data * net.params["w"][0].data), rel=1e-6)
    net.clear_param_diffs()
    grads = net.backward(end="prod", diffs=["p"])
    np.testing.assert_allclose(grads["p"], 2.0)
    assert set(grads) == {"p", "x_data_0_split_0", "w"}


# --- parameter sharing -------------------------------------------------------------------
SHARED_NET = """
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "w1" type: "Parameter" top: "w1" param { name: "w" %s }
        parameter_param { shape { dim: 2 dim: 3 } } }
layer { name: "w2" type: "Parameter" top: "w2" param { name: "w" %s }
        parameter_param { shape { %s } } }
layer { name: "p1" type: "Eltwise" bottom: "x" bottom: "w1" top: "p1"
        eltwise_param { operation: PROD } }
layer { name: "p2" type: "Eltwise" bottom: "x" bottom: "w2" top: "p2"
        eltwise_param { operation: PROD } }
layer { name: "l1" type: "Reduction" bottom: "p1" top: "l1" loss_weight: 1 }
layer { name: "l2" type: "Reduction" bottom: "p2" top: "l2" loss_weight: 3 }
"""


def shared_net(spec1="", spec2="", shape2="dim: 2 dim: 3"):
    return Net(param=net_param(SHARED_NET % (spec1, spec2, shape2)))


def test_shared_params_alias_the_owner_and_accumulate_gradients():
    net = shared_net()
    w1, w2 = net.params["w1"][0], net.params["w2"][0]
    assert np.shares_memory(w1.data, w2.data) and np.shares_memory(w1.diff, w2.diff)
    assert net.learnable_params == [w1] and net.param_owners == [-1, 0]
    assert net.learnable_param_owners == [(net.layer_names.index("w1"), 0)]
    net.blobs["x"].data[...] = x = np.arange(6.0).reshape(2, 3)
    w1.data[...] = 0.5
    loss = net.forward_backward()
    assert loss == pytest.approx(4 * 0.5 * x.sum())
    np.testing.assert_allclose(w1.diff, 4 * x)     # 1 * x from w1 plus 3 * x from w2
    net.update()
    np.testing.assert_allclose(w2.data, 0.5 - 4 * x)
    net.clear_param_diffs()
    assert np.all(w2.diff == 0)


def test_shared_param_lr_and_decay_come_from_the_owner_or_a_sharer():
    net = shared_net("lr_mult: 2", "decay_mult: 0.5")
    assert net.params_lr == [2.0] and net.params_weight_decay == [0.5]
    assert net.param_specs[0].lr_mult == 2 and net.param_specs[0].decay_mult == 0.5
    assert net.param_specs[0].name == "w"
    with pytest.raises(CaffeError, match="Shared param 'w' has mismatched lr_mult"):
        shared_net("lr_mult: 2", "lr_mult: 1")


def test_shared_param_shape_checks():
    with pytest.raises(CaffeError, match=r"Cannot share param 'w' owned by layer 'w1' with "
                                         r"layer 'w2'; shape mismatch.*2 3 \(6\).*3 2 \(6\)"):
        shared_net(shape2="dim: 3 dim: 2")
    net = Net(param=net_param((SHARED_NET % ("", "share_mode: PERMISSIVE", "dim: 3 dim: 2"))
                              .replace('bottom: "w2" top: "p2"', 'bottom: "w1" top: "p2"')
                              .replace('name: "w2" type: "Parameter" top: "w2"',
                                       'name: "w2" type: "Parameter" top: "w2x"')
                              + 'layer { name: "s" type: "Silence" bottom: "w2x" }'))
    assert net.params["w2"][0].shape == (3, 2)
    assert np.shares_memory(net.params["w2"][0].data, net.params["w1"][0].data)
    with pytest.raises(CaffeError, match="count mismatch"):
        shared_net("", "share_mode: PERMISSIVE", "dim: 3 dim: 3")


def test_too_many_param_specs():
    with pytest.raises(CaffeError, match="Too many params specified for layer w"):
        Net(param=net_param(PROD_NET.replace(
            'top: "w" parameter_param', 'top: "w" param {} param {} parameter_param')))


# --- NetState filtering ------------------------------------------------------------------
STATE_NET = """
state { stage: "base" }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "train" type: "Silence" bottom: "x" include { phase: TRAIN } }
layer { name: "test" type: "Silence" bottom: "x" include { phase: TEST } }
layer { name: "lvl" type: "Silence" bottom: "x" include { min_level: 2 } }
layer { name: "stg" type: "Silence" bottom: "x" include { stage: "deploy" stage: "base" } }
layer { name: "nostg" type: "Silence" bottom: "x" exclude { stage: "deploy" } }
"""


@pytest.mark.parametrize("phase,level,stages,expect", [
    (caffe.TRAIN, 0, (), {"train", "nostg"}),
    (caffe.TEST, 0, (), {"test", "nostg"}),
    (caffe.TEST, 2, (), {"test", "nostg", "lvl"}),
    (caffe.TRAIN, 0, ("deploy",), {"train", "stg"}),
])
def test_phase_level_stage_filtering(tmp_path, phase, level, stages, expect):
    net = Net(write(tmp_path, STATE_NET), phase, level=level, stages=stages)
    names = set(net.layer_names) - {"in", "x_in_0_split"}
    assert names == expect
    assert net.phase == phase


def test_layer_phase_is_inherited():
    net = Net(param=net_param(PROD_NET), phase=caffe.TEST)
    assert all(layer.phase == caffe.TEST for layer in net.layers)
    assert all(layer.param.phase == caffe.TEST for layer in net.layers)


# --- weights in and out ------------------------------------------------------------------
def test_to_proto_and_copy_trained_layers_from():
    a, b = prod_net(), Net(param=net_param(PROD_NET))
    proto = a.to_proto()
    assert [lp.name for lp in proto.layer] == a.layer_names
    assert list(proto.layer[2].blobs[0].shape.dim) == [2, 3]
    b.copy_trained_layers_from(proto)
    np.testing.assert_array_equal(b.params["w"][0].data, a.params["w"][0].data)
    assert not a.to_proto().layer[2].blobs[0].diff
    a.forward_backward()
    assert len(a.to_proto(write_diff=True).layer[2].blobs[0].diff) == 6


def test_copy_from_shape_mismatch_is_a_clear_error(tmp_path):
    other = Net(param=net_param(PROD_NET.replace("dim: 2 dim: 3", "dim: 3 dim: 2")))
    path = tmp_path / "w.caffemodel"
    path.write_bytes(other.to_proto().SerializeToString())
    net = prod_net()
    with pytest.raises(CaffeError) as err:
        net.copy_from(path)
    msg = str(err.value)
    assert "Cannot copy param 0 weights from layer 'w'" in msg
    assert "Source param shape is 3 2 (6); target param shape is 2 3 (6)" in msg


def test_copy_from_blob_count_mismatch(tmp_path):
    proto = prod_net().to_proto()
    proto.layer[2].blobs.add()
    with pytest.raises(CaffeError, match="Incompatible number of blobs for layer w: source "
                                         "has 2, target has 1"):
        prod_net().copy_trained_layers_from(proto)


def test_legacy_4d_blob_shapes_load_as_caffe_compares_them():
    proto = caffe_pb2.NetParameter()
    lp = proto.layer.add(name="w")
    bp = lp.blobs.add(num=1, channels=1, height=2, width=3)
    bp.data.extend(range(6))
    net = prod_net()
    net.copy_trained_layers_from(proto)
    np.testing.assert_array_equal(net.params["w"][0].data, np.arange(6).reshape(2, 3))
    bp.height, bp.width = 3, 2
    with pytest.raises(CaffeError, match=r"Source param shape is 1 1 3 2 \(6\)"):
        net.copy_trained_layers_from(proto)


def test_save_and_copy_from_round_trip(tmp_path):
    a = prod_net()
    a.save(tmp_path / "a.caffemodel")
    b = Net(write(tmp_path, PROD_NET), str(tmp_path / "a.caffemodel"), caffe.TEST)
    np.testing.assert_array_equal(b.params["w"][0].data, a.params["w"][0].data)
    c = Net(write(tmp_path, PROD_NET), caffe.TEST, weights=str(tmp_path / "a.caffemodel"))
    np.testing.assert_array_equal(c.params["w"][0].data, a.params["w"][0].data)


def test_save_hdf5_round_trip_skips_shared_params(tmp_path):
    pytest.importorskip("h5py")
    a = shared_net()
    a.params["w1"][0].data[...] = np.arange(6).reshape(2, 3)
    path = str(tmp_path / "a.caffemodel.h5")
    a.save_hdf5(path)
    import h5py
    with h5py.File(path, "r") as f:
        assert "0" in f["data/w1"] and "0" not in f["data/w2"]
    b = shared_net()
    b.copy_from(path)
    np.testing.assert_array_equal(b.params["w2"][0].data, np.arange(6).reshape(2, 3))


def test_share_trained_layers_with():
    train, test = prod_net(), Net(param=net_param(PROD_NET), phase=caffe.TEST)
    test.share_trained_layers_with(train)
    assert np.shares_memory(test.params["w"][0].data, train.params["w"][0].data)
    assert not np.shares_memory(test.params["w"][0].diff, train.params["w"][0].diff)


# --- debug_info --------------------------------------------------------------------------
def test_debug_info_logs_abs_means():
    param = net_param(PROD_NET)
    param.debug_info = True
    net = Net(param=param)
    net.blobs["x"].data[...] = -1
    net.params["w"][0].data[...] = 2
    with Logs() as logs:
        net.forward_backward()
    text = logs.text()
    assert "    [Forward] Layer prod, top blob p data: 2" in text
    assert "    [Forward] Layer w, param blob 0 data: 2" in text
    assert "    [Backward] Layer prod, bottom blob w diff: 2" in text
    assert "    [Backward] Layer w, param blob 0 diff: 2" in text
    assert (logging.ERROR, "    [Backward] All net params (data, diff): L1 norm = (12, 12); "
                           "L2 norm = (4.89898, 4.89898)") in logs.lines


# --- pycaffe surface ---------------------------------------------------------------------
def test_pycaffe_style_script(tmp_path):
    path = write(tmp_path, """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "clip" type: "Clip" bottom: "data" top: "out" clip_param { min: 0 max: 1 } }
""")
    caffe.set_mode_cpu()
    net = caffe.Net(path, caffe.TEST)
    x = np.array([[-1, 0.5, 2], [0.25, 3, -4]], np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert list(out) == ["out"]
    np.testing.assert_array_equal(out["out"], np.clip(x, 0, 1))
    out = net.forward(data=x * 0)
    assert np.all(out["out"] == 0)
    with pytest.raises(CaffeError, match="do not match net inputs"):
        net.forward(other=x)
    with pytest.raises(CaffeError, match="not batch sized"):
        net.forward(data=np.zeros((3, 3)))
    assert net.top_names["clip"] == ["out"] and net.bottom_names["clip"] == ["data"]
    assert net._layer_names == ["data", "clip"]
    assert list(net.layer_dict) == ["data", "clip"]
    assert list(net.params) == []
    net.blobs["data"].reshape(5, 3)
    net.reshape()
    assert net.blobs["out"].data.shape == (5, 3)
    assert "Input" in caffe.layer_type_list()
    assert caffe.proto.caffe_pb2.NetParameter is caffe_pb2.NetParameter


def test_pycaffe_backward_with_output_diffs():
    param = net_param("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 } } }
      layer { name: "clip" type: "Clip" bottom: "data" top: "out" clip_param { min: 0 max: 1 } }
    """)
    param.force_backward = True
    net = Net(param=param, phase=caffe.TEST)
    net.forward(data=np.array([0.5, 2.0]))
    grads = net.backward(out=np.array([3.0, 3.0]))
    np.testing.assert_array_equal(grads["data"], [3.0, 0.0])


def test_dummy_data_net_with_auto_refill():
    caffe.set_random_seed(0)
    net = Net(param=net_param("""
      layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param {
              shape { dim: 2 dim: 2 } data_filler { type: "uniform" } } }
      layer { name: "s" type: "Silence" bottom: "a" bottom: "b" }"""))
    net.forward()
    first = net.blobs["a"].data.copy()
    net.forward()
    assert not np.array_equal(first, net.blobs["a"].data)
    assert net.outputs == [] and net.inputs == []


# --- with the compute layers (InnerProduct, ReLU, SoftmaxWithLoss, Accuracy) --------------
MLP = """
name: "mlp"
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


def mlp(phase=caffe.TRAIN, dtype=np.float32):
    caffe.set_random_seed(7)
    net = Net(param=net_param(MLP), phase=phase, dtype=dtype)
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.standard_normal((4, 5))
    net.blobs["label"].data[...] = [0, 2, 1, 2]
    return net


def test_mlp_structure():
    net = mlp()
    assert net.layer_names == ["data", "ip1", "relu1", "ip2", "loss"]
    assert net.outputs == ["loss"] and net.inputs == ["data", "label"]
    assert net.params_lr == [1, 2, 1, 1]
    assert [p.shape for p in net.learnable_params] == [(6, 5), (6,), (3, 6), (3,)]
    test = mlp(caffe.TEST)
    assert "label_data_1_split" in test.layer_names and test.outputs == ["acc", "loss"]


def test_mlp_gradients_match_finite_differences():
    net = mlp(dtype=np.float64)
    net.clear_param_diffs()
    net.forward_backward()
    rng = np.random.default_rng(0)
    blobs = net.learnable_params + [net.blobs["data"]]
    grads = [(b.diff.copy()) for b in blobs]
    eps = 1e-6
    for blob, grad in zip(blobs, grads):
        v = rng.standard_normal(blob.shape)
        base = blob.data.copy()
        blob.data[...] = base + eps * v
        lp = net.forward_prefilled()
        blob.data[...] = base - eps * v
        lm = net.forward_prefilled()
        blob.data[...] = base
        numeric = (lp - lm) / (2 * eps)
        analytic = float(np.sum(grad * v))
        assert abs(numeric - analytic) <= 1e-5 * max(abs(numeric), abs(analytic), 1)


def test_mlp_sgd_steps_reduce_the_loss():
    net = mlp()
    losses = []
    for _ in range(20):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        for p, lr in zip(net.learnable_params, net.params_lr):
            p.diff[...] *= 0.1 * lr
        net.update()
    assert losses[-1] < 0.5 * losses[0]


def test_mlp_time_command_runs(tmp_path, capsys):
    from caffe_lite.cli import main
    path = write(tmp_path, MLP)
    with Logs() as logs:
        assert main(["time", "-model", path, "-iterations", "2"]) == 0
    text = logs.text()
    for piece in ("Average time per layer:", "ip1\tforward: ", "ip1\tbackward: ",
                  "Average Forward pass: ", "Average Backward pass: ",
                  "Average Forward-Backward: ", "Total Time: ", "*** Benchmark ends ***"):
        assert piece in text, piece
