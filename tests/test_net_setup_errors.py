"""A value of the file that no check caught still gives one line naming the file, line and
layer (issue #16): a negative Input dim, a kernel or pad of 2^31, or an allocation that fails
used to end in `internal error: ValueError` / `MemoryError`."""
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.layers.input import InputLayer
from caffe_lite.net import Net

INPUT = 'layer { name: "d" type: "Input" top: "x" input_param { shape { %s } } }\n'
CONV = ('layer { name: "c" type: "Convolution" bottom: "x" top: "y"\n'
        '  convolution_param { num_output: 2 %s } }\n')


@pytest.mark.parametrize("text, line, layer, words", [
    (INPUT % "dim: 1 dim: -1", 2, "'d' (Input)", "non-negative"),
])
def test_bad_values_name_file_line_and_layer(tmp_path, text, line, layer, words):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + text)
    with pytest.raises(CaffeError) as err:
        Net(str(path), phase=1)
    assert (str(err.value.path), err.value.line) == (str(path), line)
    assert f"layer {layer}: cannot be set up: " in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("conv", ["kernel_size: 2147483648", "kernel_size: 3 pad: 4294967295"])
def test_absurd_kernels_and_pads_meet_the_memory_preflight(tmp_path, conv):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + INPUT % "dim: 1 dim: 3 dim: 8 dim: 8" + CONV % conv)
    with pytest.raises(CaffeError) as err:
        Net(str(path), phase=1)
    assert (str(err.value.path), err.value.line) == (str(path), 3)
    assert "layer 'c' (Convolution): the net's blobs need more than " in str(err.value)


def test_out_of_memory_names_the_layer(tmp_path, monkeypatch):
    def refuse(self, bottom, top):
        raise MemoryError("Unable to allocate 3.64 TiB for an array with shape (1000000, "
                          "1000000) and data type float32")
    monkeypatch.setattr(InputLayer, "reshape", refuse)
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + INPUT % "dim: 2 dim: 3")
    with pytest.raises(CaffeError, match=r"layer 'd' \(Input\): not enough memory for its "
                                         r"blobs \(Unable to allocate 3.64 TiB"):
        Net(str(path), phase=1)
