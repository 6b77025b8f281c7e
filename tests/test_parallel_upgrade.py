"""io.parallel_upgrade: slices of layers upgraded in worker processes give the text, the
log lines and the errors of the whole-net path, or hand the net back to it."""
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.io import fast_text, parallel_upgrade, prototxt, upgrade
from caffe_lite.proto import caffe_pb2

from corpus import params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not parallel_upgrade._can_fork(), reason="needs os.fork")

V1_LAYER = ('layers {{ name: "c{i}" type: CONVOLUTION bottom: "{prev}" top: "c{i}" '
            "blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0\n"
            "  convolution_param {{ num_output: 4 kernel_size: 3 }} }}\n")
V1_HEAD = 'name: "n"\ninput: "r0"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
V1_DATA = ('layers { name: "d" type: DATA top: "r0" top: "label"\n'
           '  data_param { source: "db" batch_size: 2 scale: 0.5 mirror: true } }\n')
V2_BN = ('layer {{ name: "bn{i}" type: "BatchNorm" bottom: "r{i}" top: "r{i}"\n'
         "  param {{ lr_mult: 1 }} param {{ lr_mult: 1 }} param {{ lr_mult: 1 }} }}\n")


@pytest.fixture
def small_slices(monkeypatch):
    """Every net goes the parallel way, cut into slices of a few layers."""
    monkeypatch.setattr(parallel_upgrade, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel_upgrade, "SLICE_BYTES", 300)


def whole_net(text, path="net.prototxt"):
    """(changed, printed) by the whole-net path, as upgrade_net_proto_text runs it."""
    param = prototxt.parse_text(text, caffe_pb2.NetParameter(), path)
    changed = upgrade.net_needs_upgrade(param)
    if changed and not upgrade.upgrade_net_param(param, path):
        raise CaffeError("upgrade failed", path)
    return changed, fast_text.to_string(param)


def v1_chain(layers, head=V1_HEAD):
    prev, lines = "r0", [head]
    for i in range(layers):
        lines.append(V1_LAYER.format(i=i, prev=prev))
        prev = f"c{i}"
    return "".join(lines)


def test_v1_net_equals_the_whole_net_path(small_slices, caplog):
    text = v1_chain(40, V1_HEAD + V1_DATA)
    with caplog.at_level(logging.INFO, logger="caffe_lite"):
        got = parallel_upgrade.upgrade_text(text, "net.prototxt", 2)
        parallel_log = [r.getMessage() for r in caplog.records]
        caplog.clear()
        want = whole_net(text)
        whole_log = [r.getMessage() for r in caplog.records]
    assert got == want
    assert parallel_log == whole_log and len(whole_log) == 8     # data 3, V1 2, input 3
    assert 'type: "Input"' in got[1] and "lr_mult: 2" in got[1] and "transform_param" in got[1]


def test_v2_net_with_old_batch_norm_params(small_slices):
    text = 'name: "n"\ninput: "r0"\ninput_shape { dim: 1 dim: 2 }\n' + "".join(
        V2_BN.format(i=i) for i in range(30))
    got = parallel_upgrade.upgrade_text(text, "net.prototxt", 2)
    assert got == whole_net(text) and "lr_mult: 0" in got[1]


def test_a_current_net_is_unchanged(small_slices):
    text = "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "d" top: "d" }}\n'
                   for i in range(30))
    got = parallel_upgrade.upgrade_text(text, "net.prototxt", 2)
    assert got == (False, whole_net(text)[1])


@pytest.mark.parametrize("text", [
    # V0 layers: the padding-layer rule needs the whole net
    'layers { layer { name: "c" type: "conv" } top: "c" }\n' * 20,
    # `layer` and `layers` in one net: V1 -> V2 drops the `layer`s (with an error)
    v1_chain(10) + 'layer { name: "x" type: "ReLU" bottom: "c9" top: "c9" }\n',
    # a field after the layers
    v1_chain(10) + "force_backward: true\n",
    # a `layer` line at column 0 inside a message: the cut there leaves unbalanced slices
    'layers {\nlayer {\nname: "c"\ntype: "conv"\n}\ntop: "c"\n}\n' * 20,
    # text that fast_text hands to text_format
    v1_chain(10).replace('name: "c3"', 'name: "c" "3"'),
], ids=["v0", "mixed", "field-after", "nested-cut", "concatenated-string"])
def test_outside_the_parallel_path_the_whole_net_path_runs(small_slices, text):
    assert parallel_upgrade.upgrade_text(text, "net.prototxt", 2) is None


def test_small_nets_and_one_worker_use_the_whole_net_path(monkeypatch):
    text = v1_chain(40)
    assert parallel_upgrade.upgrade_text(text, "net.prototxt", 2) is None     # < 4 MB
    monkeypatch.setattr(parallel_upgrade, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel_upgrade, "SLICE_BYTES", 300)
    assert parallel_upgrade.upgrade_text(text, "net.prototxt", 1) is None
    assert parallel_upgrade.upgrade_text(text, "net.prototxt", 2) is not None


def test_errors_are_left_to_the_whole_net_path(small_slices):
    """An error in a later slice is reported at its line of the file, not of the slice."""
    lines = v1_chain(20).splitlines(keepends=True)
    lines[30] = lines[30].replace("type: CONVOLUTION", "type: 4242")
    text = "".join(lines)
    assert parallel_upgrade.upgrade_text(text, "net.prototxt", 2) is None
    with pytest.raises(CaffeError, match="^net.prototxt:31:.*unknown value 4242"):
        whole_net(text)


@pytest.mark.parametrize("path", params("net"))
def test_corpus_nets(small_slices, path):
    """Each corpus net: the whole-net path's text, or a hand-back to it."""
    text = prototxt.read_text_file(path)
    try:
        want = whole_net(text, str(path))
    except CaffeError:
        want = None
    got = parallel_upgrade.upgrade_text(text, str(path), 2)
    assert got is None or got == want


def test_command_on_a_big_net_writes_what_the_whole_net_path_writes(tmp_path):
    """`caffe-lite upgrade_net_proto_text` on a net above MIN_PARALLEL_BYTES (4 MB)."""
    text = v1_chain(30000, V1_HEAD + V1_DATA)
    assert len(text) > parallel_upgrade.MIN_PARALLEL_BYTES
    src, dst = tmp_path / "big.prototxt", tmp_path / "out.prototxt"
    src.write_text(text)
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "upgrade_net_proto_text",
                          str(src), str(dst)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert dst.read_text() == whole_net(text, str(src))[1]
    assert "Successfully upgraded file specified using deprecated V1LayerParameter" \
        in run.stderr


def _killed(args):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_hands_the_net_to_the_whole_net_path(small_slices, monkeypatch):
    """A worker killed (the OOM killer, say) must not hang the upgrade."""
    monkeypatch.setattr(parallel_upgrade, "_upgrade_slice", _killed)
    assert parallel_upgrade.upgrade_text(v1_chain(20), "net.prototxt", 2) is None
