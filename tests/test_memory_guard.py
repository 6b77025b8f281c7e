"""The memory pre-flight (issue #16): a net whose blobs need more than the machine has (or
-max_memory) is refused before they are allocated, in one line naming the layer and the
largest layers; ordinary nets are untouched."""
import pytest

from caffe_lite import cli, memory_guard
from caffe_lite.errors import CaffeError
from caffe_lite.net import Net

pytestmark = pytest.mark.usefixtures("restore_glog")

BIG = """name: "big"
layer { name: "d" type: "Input" top: "x"
  input_param { shape { dim: 64 dim: 3 dim: 224 dim: 224 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param { num_output: 512 kernel_size: 3 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 512 kernel_size: 3 pad: 1 } }
"""
SMALL = ('name: "s"\nlayer { name: "d" type: "Input" top: "x" '
         'input_param { shape { dim: 2 dim: 3 } } }\n')


@pytest.mark.parametrize("text, want", [("512M", 512 << 20), ("4G", 4 << 30), ("1.5T", 3 << 39),
                                        ("1000", 1000), ("2GiB", 2 << 30)])
def test_parse_size(text, want):
    assert memory_guard.parse_size(text) == want


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "4X"])
def test_parse_size_refuses(text):
    with pytest.raises(CaffeError, match="-max_memory takes a size"):
        memory_guard.parse_size(text)


def test_a_net_too_big_is_refused_before_its_blobs_exist(tmp_path):
    path = tmp_path / "big.prototxt"
    path.write_text(BIG)
    with pytest.raises(CaffeError) as err:
        Net(str(path), phase=1, max_memory=1 << 30)       # c1's top alone is 6.2 GiB x 2
    message = str(err.value)
    assert (str(err.value.path), err.value.line) == (str(path), 4)
    assert "layer 'c1' (Convolution): the net's blobs need more than 1.0 GiB" in message
    assert "largest: c1 12.3 GiB, d 73.5 MiB" in message


def test_ordinary_nets_build_under_a_limit(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text(SMALL)
    net = Net(str(path), phase=1, max_memory=1 << 20)
    assert net.blobs["x"].data.shape == (2, 3)


def test_the_flag_sets_the_limit_for_the_command_only(tmp_path, capsys):
    path = tmp_path / "big.prototxt"
    path.write_text(BIG)
    rc = cli.main(["time", "-model", str(path), "-iterations", "1", "-max_memory", "100M"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("caffe-lite")]
    assert rc == 1 and len(lines) == 1
    assert "the net's blobs need more than 100.0 MiB" in lines[0]
    assert memory_guard._limit is None        # given back after the command
