"""A value of the file that no check caught still gives one line naming the file, line and
layer (issue #16): a negative Input dim, a kernel or pad too large for memory, or a net whose
blobs do not fit used to end in `internal error: ValueError` / `MemoryError`."""
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.layers.input import InputLayer
from caffe_lite.net import Net

INPUT = 'layer { name: "d" type: "Input" top: "x" input_param { shape { %s } } }\n'
CONV = ('layer { name: "c" type: "Convolution" bottom: "x" top: "y"\n'
        '  convolution_param { num_output: 2 %s } }\n')


@pytest.mark.parametrize("text, line, layer, words", [
    (INPUT % "dim: 1 dim: -1", 2, "'d' (Input)", "non-negative"),
    (INPUT % "dim: 1 dim: 3 dim: 8 dim: 8" + CONV % "kernel_size: 2147483648", 3,
     "'c' (Convolution)", "too big"),
    (INPUT % "dim: 1 dim: 3 dim: 8 dim: 8" + CONV % "kernel_size: 3 pad: 4294967295", 3,
     "'c' (Convolution)", "too big"),
])
def test_bad_values_name_file_line_and_layer(tmp_path, text, line, layer, words):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + text)
    with pytest.raises(CaffeError) as err:
        Net(str(path), phase=1)
    assert (str(err.value.path), err.value.line) == (str(path), line)
    assert f"layer {layer}: cannot be set up: " in str(err.value) and words in str(err.value)


def test_out_of_memory_names_the_layer(tmp_path, monkeypatch):
    def refuse(self, bottom, top):
        raise MemoryError("Unable to allocate 3.64 TiB for an array with shape (1000000, "
                          "1000000) and data type float32")
    monkeypatch.setattr(InputLayer, "reshape", refuse)
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n' + INPUT % "dim: 1000000 dim: 1000000")
    with pytest.raises(CaffeError, match=r"layer 'd' \(Input\): not enough memory for its "
                                         r"blobs \(Unable to allocate 3.64 TiB"):
        Net(str(path), phase=1)
