"""DNS and INQ in training: masks saved, loaded and resumed; the statistics survive -snapshot;
INQ's frozen weights keep zero update and zero history under SGD, Adam and LarsSGD; the
`-inq_portion` flag of `caffe-lite train` (official INQ) driven as a user runs it."""
import subprocess
import sys

import numpy as np
import pytest

from caffe_lite.compress import inq
from caffe_lite.io.binary import read_net_binary
from caffe_lite.net import Net
from caffe_lite.solvers import get_solver

DATA = ('layer { name: "data" type: "DummyData" top: "data" top: "label" '
        "dummy_data_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 } "
        "data_filler { type: 'gaussian' std: 1 } data_filler { type: 'constant' value: 1 } } }\n")
FILLERS = ("weight_mask_filler { type: 'constant' value: 1 } "
           "bias_mask_filler { type: 'constant' value: 1 }")


def net_text(kind):
    if kind == "dns":
        conv = ('type: "DNSConvolution"', f"dns_convolution_param {{ gamma: 0.5 power: 1 "
                f"c_rate: 0.2 {FILLERS} }}")
        ip = ('type: "CInnerProduct"', f"cinner_product_param {{ gamma: 0.5 c_rate: 0.2 "
              f"{FILLERS} }}")
    elif kind == "inq":
        conv = ('type: "INQConvolution"', f"inq_convolution_param {{ portion: 0 "
                f"portion: 0.6 num_quantum_values: 5 {FILLERS} }}")
        ip = ('type: "INQInnerProduct"', f"inq_inner_product_param {{ portion: 0 "
              f"portion: 0.6 num_quantum_values: 5 {FILLERS} }}")
    else:
        conv, ip = ('type: "Convolution"', ""), ('type: "InnerProduct"', "")
    return (DATA +
            f'layer {{ name: "conv1" {conv[0]} bottom: "data" top: "conv1" '
            "convolution_param { num_output: 3 kernel_size: 3 "
            "weight_filler { type: 'gaussian' std: 0.3 } "
            f"bias_filler {{ type: 'gaussian' std: 0.1 }} }} {conv[1]} }}\n"
            'layer { name: "relu" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
            f'layer {{ name: "ip1" {ip[0]} bottom: "conv1" top: "ip1" '
            "inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.3 } "
            f"bias_filler {{ type: 'gaussian' std: 0.1 }} }} {ip[1]} }}\n"
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" '
            'top: "loss" }\n')


def write_solver(tmp_path, kind, solver_type="SGD", max_iter=4, snapshot=0, extra=""):
    (tmp_path / "net.prototxt").write_text(net_text(kind))
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}"\ntype: "{solver_type}"\n'
                    f"base_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.01\nlr_policy: 'fixed'\n"
                    f"max_iter: {max_iter}\nsnapshot: {snapshot}\n"
                    f'snapshot_prefix: "{tmp_path / "snap"}"\nrandom_seed: 5\ndisplay: 0\n'
                    f"{extra}")
    return path


def all_blobs(net):
    return {f"{name}[{i}]": b.data.copy() for name, blobs in net.params.items()
            for i, b in enumerate(blobs)}


def test_dns_masks_and_statistics_survive_snapshot_and_resume(tmp_path):
    straight = get_solver(str(write_solver(tmp_path, "dns", max_iter=6)))
    straight.solve()
    want = all_blobs(straight.net)
    assert any((m == 0).any() for k, m in want.items() if k.endswith(("[2]", "[3]")))

    resumed_dir = tmp_path / "r"
    resumed_dir.mkdir()
    first = get_solver(str(write_solver(resumed_dir, "dns", max_iter=6, snapshot=3)))
    first.step(3)
    first.snapshot()
    stats = {n: l.statistics for n, l in zip(first.net.layer_names, first.net.layers)
             if hasattr(l, "statistics")}
    second = get_solver(str(write_solver(resumed_dir, "dns", max_iter=6)))
    second.restore(str(resumed_dir / "snap_iter_3.solverstate"))
    for n, l in zip(second.net.layer_names, second.net.layers):
        if hasattr(l, "statistics"):
            assert l.statistics == stats[n]
    second.solve()
    got = all_blobs(second.net)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_masks_are_saved_in_the_caffemodel_and_a_dense_model_keeps_the_filler_masks(tmp_path):
    solver = get_solver(str(write_solver(tmp_path, "dns", max_iter=2, snapshot=2)))
    solver.solve()
    saved = read_net_binary(str(tmp_path / "snap_iter_2.caffemodel"))
    layers = {lp.name: lp for lp in saved.layer}
    assert len(layers["conv1"].blobs) == 4 and len(layers["ip1"].blobs) == 4
    loaded = Net(str(tmp_path / "net.prototxt"), phase=1,
                 weights=str(tmp_path / "snap_iter_2.caffemodel"))
    for name in ("conv1", "ip1"):
        for i in range(4):
            np.testing.assert_array_equal(loaded.params[name][i].data,
                                          solver.net.params[name][i].data)
    # a dense caffemodel (2 blobs per layer) into the masked net: masks stay at the filler
    dense_dir = tmp_path / "dense"
    dense_dir.mkdir()
    dense = get_solver(str(write_solver(dense_dir, "plain", max_iter=1, snapshot=1)))
    dense.solve()
    masked = Net(str(tmp_path / "net.prototxt"), phase=1,
                 weights=str(dense_dir / "snap_iter_1.caffemodel"))
    for name in ("conv1", "ip1"):
        np.testing.assert_array_equal(masked.params[name][0].data,
                                      dense.net.params[name][0].data)
        assert masked.params[name][2].data.all() and masked.params[name][3].data.all()


@pytest.mark.parametrize("solver_type", ["SGD", "Nesterov", "Adam", "LarsSGD"])
def test_quantized_weights_stay_frozen_with_no_history(tmp_path, solver_type):
    solver = get_solver(str(write_solver(tmp_path, "inq", solver_type, max_iter=5)))
    solver.step(1)
    frozen = {}
    for name in ("conv1", "ip1"):
        for i in (0, 1):
            mask = solver.net.params[name][2 + i].data
            assert (mask == 0).any() and (mask == 1).any()
            frozen[(name, i)] = (mask == 0, solver.net.params[name][i].data.copy())
    solver.step(4)
    for (name, i), (where, value) in frozen.items():
        data = solver.net.params[name][i].data
        np.testing.assert_array_equal(data[where], value[where])
        assert (data[~where] != value[~where]).any(), "the float part should train"
        ok, _ = inq.power_of_two_report(data[where])
        assert ok
    for p in solver.params:
        owner = frozen.get((p.layer.name, p.blob_index))
        if owner is not None:
            for h in p.history:
                assert not h[owner[0]].any()


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "caffe_lite", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_inq_portion_quantizes_plain_caffe_layers(tmp_path):
    plain = write_solver(tmp_path, "plain", max_iter=1, snapshot=1)
    first = run_cli("train", "-solver", str(plain), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "step").mkdir()
    step = write_solver(tmp_path / "step", "plain", max_iter=3, snapshot=3)
    done = run_cli("train", "-solver", str(step), "-weights",
                   str(tmp_path / "snap_iter_1.caffemodel"), "-inq_portion", "0.5",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "INQ conv1[0]: 15 of 27 weights quantized (50%)" in done.stderr
    before = read_net_binary(str(tmp_path / "snap_iter_1.caffemodel"))
    after = read_net_binary(str(tmp_path / "step" / "snap_iter_3.caffemodel"))
    for b, a in zip(before.layer, after.layer):
        if not b.blobs:
            continue
        w0, w1 = np.array(b.blobs[0].data), np.array(a.blobs[0].data)
        big = np.abs(w0) >= np.sort(np.abs(w0))[int(w0.size * 0.5) - 1]
        ok, _ = inq.power_of_two_report(w1[big])
        assert ok, b.name
        assert not inq.power_of_two_report(w1[~big])[0]
    bad = run_cli("train", "-solver", str(step), "-inq_portion", "1.5", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "-inq_portion must be in [0, 1] (the fraction of each weight blob quantized), got 1.5")
