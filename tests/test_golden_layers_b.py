"""Single-layer parity with BVLC Caffe's golden blobs (../shared/golden, skipped when absent).

Each layer is run alone on the bottoms and parameters Caffe saw; its tops, bottom diffs and
parameter diffs are compared with Caffe's. Split blobs carry the same data as their source;
the diff a layer receives at a split is that split's diff.
"""
from pathlib import Path

import numpy as np
import pytest

from gradcheck import layer_param
from caffe_lite.blob import Blob
from caffe_lite.common import TEST, TRAIN
from caffe_lite.layers import create_layer

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
RTOL = 2e-6


def load(case):
    path = GOLDEN / case / "golden.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return np.load(path)


def blob(arr):
    b = Blob(arr.shape, np.float32)
    b.data[...] = arr
    return b


def build(text, bottoms, phase=TRAIN, top=None):
    layer = create_layer(layer_param(text), phase, np.float32)
    tops = [top if top is not None else Blob((), np.float32)]
    layer.setup(bottoms, tops)
    return layer, tops


def close(got, want, rtol=RTOL):
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= rtol * scale, (
        f"max abs error {float(np.abs(got - want).max())} vs scale {scale}")


BN = ('name: "bn1" type: "BatchNorm" batch_norm_param { use_global_stats: false '
      'moving_average_fraction: 0.9 eps: 1e-5 }')
SCALE = 'name: "scale1" type: "Scale" scale_param { bias_term: true }'


@pytest.mark.parametrize("phase", ["train", "test"])
def test_batch_norm_scale(phase):
    z = load("layers_b")
    x = blob(z[f"{phase}/blob/data"])
    bn, (y,) = build(BN, [x], TRAIN if phase == "train" else TEST)
    sc, _ = build(SCALE, [y], top=y)           # in place, as in the net
    stats = "param" if phase == "train" else "after"
    for i, b in enumerate(bn.blobs):
        b.data[...] = z[f"train/{stats}/bn1/{i}"]
    for i, b in enumerate(sc.blobs):
        b.data[...] = z[f"train/param/scale1/{i}"]
    bn.forward([x], [y])
    sc.forward([y], [y])
    close(y.data, z[f"{phase}/blob/bn1"])
    if phase == "test":
        return
    for i, b in enumerate(bn.blobs):
        close(b.data, z[f"train/after/bn1/{i}"])
    y.diff[...] = sum(z[f"train/diff/bn1_scale1_0_split_{k}"] for k in range(3))
    sc.backward([y], [True], [y])
    close(y.diff, z["train/diff/bn1"])
    for i, b in enumerate(sc.blobs):
        close(b.diff, z[f"train/pdiff/scale1/{i}"])
    bn.backward([y], [True], [x])
    close(x.diff, z["train/diff/data"])


@pytest.mark.parametrize("name,split,params", [
    ("lrn1", 0, "local_size: 3 alpha: 0.5 beta: 0.75 k: 2"),
    ("lrn2", 1, "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL"),
])
def test_lrn(name, split, params):
    z = load("layers_b")
    x = blob(z["train/blob/bn1"])
    layer, (y,) = build(f'name: "{name}" type: "LRN" lrn_param {{ {params} }}', [x])
    layer.forward([x], [y])
    close(y.data, z[f"train/blob/{name}"])
    y.diff[...] = z[f"train/diff/{name}"]
    layer.backward([y], [True], [x])
    close(x.diff, z[f"train/diff/bn1_scale1_0_split_{split}"])


def test_softmax():
    z = load("layers_b")
    x = blob(z["train/blob/fc"])
    layer, (y,) = build('name: "softmax" type: "Softmax"', [x])
    layer.forward([x], [y])
    close(y.data, z["train/blob/softmax"])
    y.diff[...] = z["train/diff/softmax"]
    layer.backward([y], [True], [x])
    close(x.diff, z["train/diff/fc_fc_0_split_0"])


POOLS = [  # case, layer, params, bottom blob, bottom diff blob
    ("layers_a", "pool1", "pool: MAX kernel_size: 3 stride: 2", "conv2", "conv2_conv2_0_split_0"),
    ("layers_a", "pool2", "pool: AVE kernel_size: 3 stride: 3 pad: 1", "conv2",
     "conv2_conv2_0_split_1"),
    ("layers_a", "gpool", "pool: AVE global_pooling: true", "deconv", "deconv"),
    ("lenet", "pool1", "pool: MAX kernel_size: 2 stride: 2", "conv1", "conv1"),
    ("lenet", "pool2", "pool: MAX kernel_size: 2 stride: 2", "conv2", "conv2"),
]


@pytest.mark.parametrize("case,name,params,src,src_diff", POOLS)
def test_pooling(case, name, params, src, src_diff):
    z = load(case)
    for phase in ("train", "test"):
        x = blob(z[f"{phase}/blob/{src}"])
        layer, (y,) = build(f'name: "{name}" type: "Pooling" pooling_param {{ {params} }}', [x])
        layer.forward([x], [y])
        close(y.data, z[f"{phase}/blob/{name}"])
    x = blob(z[f"train/blob/{src}"])
    layer.forward([x], [y])
    y.diff[...] = z[f"train/diff/{name}"]
    layer.backward([y], [True], [x])
    close(x.diff, z[f"train/diff/{src_diff}"])


@pytest.mark.parametrize("case,scores,scores_diff", [
    ("layers_a", "sum", "sum_sum_0_split_0"),
    ("lenet", "ip2", "ip2"),
])
def test_softmax_loss(case, scores, scores_diff):
    z = load(case)
    label = blob(z["train/blob/label"])
    for phase in ("train", "test"):
        x = blob(z[f"{phase}/blob/{scores}"])
        layer, (y,) = build('name: "loss" type: "SoftmaxWithLoss"', [x, label])
        layer.forward([x, label], [y])
        close(y.data, z[f"{phase}/blob/loss"])
    layer.backward([y], [True, False], [x, label])
    close(x.diff, z[f"train/diff/{scores_diff}"])


def test_accuracy():
    z = load("layers_a")
    label = blob(z["train/blob/label"])
    for phase in ("train", "test"):
        x = blob(z[f"{phase}/blob/sum"])
        layer, (y,) = build('name: "acc" type: "Accuracy" accuracy_param { top_k: 2 }',
                            [x, label])
        layer.forward([x, label], [y])
        assert y.data == z[f"{phase}/blob/acc"]
