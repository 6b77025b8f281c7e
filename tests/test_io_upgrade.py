"""Upstream's upgrade rules: V0 -> V1 -> V2, data transformation, input fields, BatchNorm,
solver_type. Each old fixture upgrades to a modern net written out by hand here."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.io import prototxt, upgrade
from caffe_lite.proto import caffe_pb2

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def upgraded(text, tmp_path):
    path = tmp_path / "old.prototxt"
    path.write_text(text)
    return prototxt.read_net_param(path)


def assert_same(got, want_text):
    want = net(want_text)
    assert got == want, text_format.MessageToString(got)


V0_NET = """
name: "v0"
layers { layer { name: "data" type: "data" source: "train_lmdb" batchsize: 64
                 meanfile: "mean.binaryproto" cropsize: 27 mirror: true scale: 0.5 }
         top: "data" top: "label" }
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 1 group: 2
                 biasterm: false weight_filler { type: "gaussian" std: 0.01 }
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 pad: 1 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 5 alpha: 0.0001 beta: 0.75 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10
                 bias_filler { type: "constant" value: 0.1 } }
         bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.4 } bottom: "fc" top: "fc" }
layers { layer { name: "loss" type: "softmax_loss" } bottom: "fc" bottom: "label" }
"""

V0_EXPECTED = """
name: "v0"
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.5 mirror: true crop_size: 27 mean_file: "mean.binaryproto" }
        data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 16 bias_term: false pad: 2 kernel_size: 5 group: 2
                            stride: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc"
        inner_product_param { num_output: 10 bias_filler { type: "constant" value: 0.1 } } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.4 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }
"""


def test_v0_net_upgrades_to_modern(tmp_path):
    assert_same(upgraded(V0_NET, tmp_path), V0_EXPECTED)


def test_v0_input_dims(tmp_path):
    got = upgraded('name: "d" input: "data" input_dim: 2 input_dim: 3 input_dim: 5 '
                   'input_dim: 7 force_backward: true\n'
                   'layers { layer { name: "s" type: "softmax" } bottom: "data" top: "s" }\n',
                   tmp_path)
    assert_same(got, 'name: "d" force_backward: true\n'
                     'layer { name: "input" type: "Input" top: "data"\n'
                     '        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }\n'
                     'layer { name: "s" type: "Softmax" bottom: "data" top: "s" }\n')


def test_v0_misplaced_parameter_is_reported(caplog):
    param = net('layers { layer { name: "r" type: "relu" num_output: 3 } top: "r" }')
    assert upgrade.upgrade_net_param(param, "x.prototxt") is False
    assert param.layer[0].type == "ReLU"


def test_v0_unknown_type_is_an_error(tmp_path):
    with pytest.raises(CaffeError, match="Unknown layer name: convolution"):
        upgraded('layers { layer { name: "c" type: "convolution" } }', tmp_path)


def test_v0_unknown_bottom_is_an_error(tmp_path):
    with pytest.raises(CaffeError, match="Unknown blob input nowhere"):
        upgraded('layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "r" }',
                 tmp_path)


def test_v0_padding_into_relu_is_an_error(tmp_path):
    with pytest.raises(CaffeError, match="Padding layer input to non-convolutional"):
        upgraded('input: "d" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n'
                 'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "d" top: "p" }\n'
                 'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }', tmp_path)


V1_NET = """
name: "v1"
layers { name: "mnist" type: DATA top: "data" top: "label"
         data_param { source: "lmdb" batch_size: 64 scale: 0.00390625 mirror: false }
         include { phase: TRAIN } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         param: "w" param: "b" blob_share_mode: STRICT
         convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
         inner_product_param { num_output: 10 } }
layers { name: "acc" type: ACCURACY bottom: "ip1" bottom: "label" top: "acc"
         exclude { phase: TRAIN } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss"
         loss_weight: 2 }
layers { name: "elt" type: ELTWISE bottom: "ip1" bottom: "ip1" top: "e"
         eltwise_param { operation: PROD } }
layers { name: "sil" type: SILENCE bottom: "e" }
"""

V1_EXPECTED = """
name: "v1"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 mirror: false }
        data_param { source: "lmdb" batch_size: 64 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { name: "w" share_mode: STRICT lr_mult: 1 decay_mult: 1 }
        param { name: "b" lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 10 } }
layer { name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc"
        exclude { phase: TRAIN } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
        loss_weight: 2 }
layer { name: "elt" type: "Eltwise" bottom: "ip1" bottom: "ip1" top: "e"
        eltwise_param { operation: PROD } }
layer { name: "sil" type: "Silence" bottom: "e" }
"""


def test_v1_net_upgrades_to_modern(tmp_path):
    assert_same(upgraded(V1_NET, tmp_path), V1_EXPECTED)


def test_every_v1_type_has_a_string():
    enum = caffe_pb2.V1LayerParameter.LayerType
    for name in enum.keys():
        assert name in upgrade.V1_LAYER_TYPES
    assert upgrade.upgrade_v1_layer_type(enum.Value("SOFTMAX_LOSS")) == "SoftmaxWithLoss"


def test_every_v0_type_maps_to_a_v1_type():
    enum = caffe_pb2.V1LayerParameter.LayerType
    for v1_name in upgrade.V0_LAYER_TYPES.values():
        assert v1_name in enum.keys()


def test_v1_with_layer_entries_drops_them():
    param = net('layer { name: "new" type: "ReLU" }\nlayers { name: "old" type: RELU }')
    assert upgrade.upgrade_net_param(param) is False
    assert [lp.name for lp in param.layer] == ["old"]


def test_v1_param_specs_cover_the_longest_list():
    param = net('layers { name: "c" type: CONVOLUTION param: "w" blobs_lr: 1 blobs_lr: 2 '
                'weight_decay: 0 blob_share_mode: PERMISSIVE blob_share_mode: STRICT '
                'blob_share_mode: STRICT }')
    upgrade.upgrade_net_param(param)
    assert_same(param, 'layer { name: "c" type: "Convolution"\n'
                       '  param { name: "w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 0 }\n'
                       '  param { share_mode: STRICT lr_mult: 2 } param { share_mode: STRICT } }')


def test_v1_layer_with_v0_layer_inside(caplog):
    v1 = caffe_pb2.V1LayerParameter(name="a", type=caffe_pb2.V1LayerParameter.RELU,
                                    bottom=["x"], top=["y"])
    v1.layer.name = "old"
    lp = caffe_pb2.LayerParameter()
    assert upgrade.upgrade_v1_layer_parameter(v1, lp) is False
    assert "has V0 layer" in caplog.text
    assert lp == caffe_pb2.LayerParameter(name="a", type="ReLU", bottom=["x"], top=["y"])


def test_v1_upgrade_error_leaves_the_net_as_it_was(monkeypatch):
    param = net('layer { name: "new" type: "ReLU" }\n'
                'layers { name: "a" type: RELU } layers { name: "b" type: TANH }')
    before = param.SerializeToString()
    real = upgrade.upgrade_v1_layer_type

    def fail_on_tanh(value, path=""):
        if value == caffe_pb2.V1LayerParameter.TANH:
            raise CaffeError("no TanH today")
        return real(value, path)

    monkeypatch.setattr(upgrade, "upgrade_v1_layer_type", fail_on_tanh)
    with pytest.raises(CaffeError, match="no TanH"):
        upgrade.upgrade_v1_net(param)
    assert param.SerializeToString() == before


def test_v1_blobs_are_kept():
    param = net('layers { name: "ip" type: INNER_PRODUCT blobs { shape { dim: 2 } data: 1 '
                'data: 2 } }')
    upgrade.upgrade_net_param(param)
    assert list(param.layer[0].blobs[0].data) == [1, 2]


def test_input_shape_upgrade():
    param = net('input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }\n'
                'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }')
    upgrade.upgrade_net_param(param)
    assert_same(param, 'layer { name: "input" type: "Input" top: "a" top: "b"\n'
                       '  input_param { shape { dim: 1 dim: 2 } shape { dim: 3 } } }\n'
                       'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }')


def test_bare_input_is_dropped():
    # A legacy caffemodel lists its inputs without shapes: Caffe just drops them.
    param = net('input: "data" layer { name: "r" type: "ReLU" }')
    upgrade.upgrade_net_param(param)
    assert_same(param, 'layer { name: "r" type: "ReLU" }')


def test_short_input_dim_is_an_error():
    with pytest.raises(CaffeError, match="4 per input"):
        upgrade.upgrade_net_param(net('input: "a" input_dim: 1 input_dim: 2'))


def test_batch_norm_with_three_params():
    param = net('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 name: "m" }\n'
                '  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 } }\n'
                'layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }')
    assert upgrade.net_needs_batch_norm_upgrade(param)
    upgrade.upgrade_net_param(param)
    bn, bn2 = param.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0, 0)] * 3
    assert bn.param[0].name == "m"
    assert bn2.param[0].lr_mult == 1  # only the three-param form is the old definition


@pytest.mark.skipif(not (SHARED / "corpus").is_dir(), reason="../shared/corpus is not present")
def test_corpus_batch_norm_nets_upgrade():
    seen = 0
    for path in sorted((SHARED / "corpus").rglob("*.prototxt")):
        text = path.read_text(errors="replace")
        if '"BatchNorm"' not in text:
            continue
        if prototxt.detect_kind(path) != "net":
            continue
        raw = prototxt.parse_text(text, caffe_pb2.NetParameter(), path)
        param = caffe_pb2.NetParameter()
        param.CopyFrom(raw)
        upgrade.upgrade_net_param(param, str(path))
        for old, new in zip(raw.layer, param.layer):
            if old.type == "BatchNorm" and len(old.param) == 3:
                seen += 1
                assert all(p.lr_mult == 0 and p.decay_mult == 0 for p in new.param)
    assert seen > 0


def test_modern_net_is_untouched(tmp_path):
    text = ('name: "m"\nlayer { name: "in" type: "Input" top: "d" '
            'input_param { shape { dim: 1 } } }\n')
    param = net(text)
    assert not upgrade.net_needs_upgrade(param)
    assert upgrade.upgrade_net_param(param) is True
    assert param == net(text)


# --- solvers --------------------------------------------------------------------------------

@pytest.mark.parametrize("enum,string", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                         ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                         ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(tmp_path, enum, string):
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "net.prototxt"\nbase_lr: 0.01\nsolver_type: {enum}\n')
    param = prototxt.read_solver_param(path)
    assert param.type == string and not param.HasField("solver_type")
    assert param.net == "net.prototxt"  # relative paths stay as written


def test_solver_type_and_type_is_an_error(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('solver_type: ADAM\ntype: "Adam"\n')
    with pytest.raises(CaffeError, match="cannot be both specified"):
        prototxt.read_solver_param(path)
