"""Text prototxt reading: the shared corpus, parse errors with line:col, odd files, layer lines."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.io import prototxt
from caffe_lite.proto import caffe_pb2

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".md") \
    if CORPUS.is_dir() else []


def _ids(paths):
    return [str(p.relative_to(CORPUS)) for p in paths]


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --- the corpus --------------------------------------------------------------------------------

@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is not present")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=_ids(CORPUS_FILES))
def test_corpus_file_parses(path):
    kind = prototxt.detect_kind(path)
    if kind == "net":
        param, lines = prototxt.read_net_param(path, with_lines=True)
        assert len(lines) == len(param.layer)
        assert all(isinstance(n, int) and n > 0 for n in lines)
        assert not len(param.layers) and not len(param.input)
    elif kind == "solver":
        param = prototxt.read_solver_param(path)
        assert not param.HasField("solver_type")
    else:
        param = prototxt.read_deephi_config(path)
    # Text round trip: print, parse again, same message.
    again = type(param)()
    text_format.Parse(text_format.MessageToString(param), again)
    assert again == param


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is not present")
def test_corpus_kinds():
    kinds = [prototxt.detect_kind(p) for p in CORPUS_FILES]
    assert kinds.count("net") > 100 and kinds.count("solver") > 100
    deephi = [p for p, k in zip(CORPUS_FILES, kinds) if k == "deephi_config"]
    assert deephi and all(p.name.startswith("config") for p in deephi)


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is not present")
def test_corpus_layer_lines_point_at_layer_blocks():
    path = CORPUS / "bvlc/examples/mnist/lenet_train_test.prototxt"
    param, lines = prototxt.read_net_param(path, with_lines=True)
    src = path.read_text().splitlines()
    for layer, line in zip(param.layer, lines):
        assert src[line - 1].strip().startswith("layer")
        block = "\n".join(src[line - 1:line + 3])
        assert f'"{layer.name}"' in block


# --- parse errors --------------------------------------------------------------------------------

def test_unknown_field_names_field_line_col(tmp_path):
    path = write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  bottum: "data"\n}\n')
    with pytest.raises(CaffeError) as err:
        prototxt.read_net_param(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4:3: ")
    assert "bottum" in msg and "LayerParameter" in msg and "'bottom'" in msg
    assert "\n" not in msg


def test_bad_enum_lists_values(tmp_path):
    path = write(tmp_path, 'layer {\n  name: "p"\n  type: "Pooling"\n'
                           '  pooling_param { pool: MAXX }\n}\n')
    with pytest.raises(CaffeError) as err:
        prototxt.read_net_param(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4:")
    assert "MAXX" in msg and "pool" in msg and "MAX, AVE, STOCHASTIC" in msg


def test_wrong_type_names_field(tmp_path):
    path = write(tmp_path, 'layer {\n  name: "c"\n  convolution_param {\n'
                           '    num_output: ten\n  }\n}\n')
    with pytest.raises(CaffeError) as err:
        prototxt.read_net_param(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4:17: ") and "num_output" in msg and "ten" in msg


def test_string_expected(tmp_path):
    path = write(tmp_path, "layer {\n  type: 3\n}\n")
    with pytest.raises(CaffeError, match=r":2:9: field 'type': Expected string"):
        prototxt.read_net_param(path)


def _parse_error(text, message=None):
    with pytest.raises(CaffeError) as err:
        prototxt.parse_text(text, message or caffe_pb2.NetParameter(), "net.prototxt")
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unclosed_block(tmp_path):
    path = write(tmp_path, 'layer {\n  name: "a"\n')
    with pytest.raises(CaffeError) as err:
        prototxt.read_net_param(path)
    assert str(err.value) == (f"{path}:2:9: end of file: 'layer {{' opened at line 1 is not "
                              "closed (a '}' is missing)")


TRAIN_VAL_HEAD = ('name: "x"\n'
                  '# a { in a comment\n'
                  'layer {\n'
                  '  name: "data {"\n'
                  '  type: "Data"\n'
                  '  top: "data"\n'
                  '  transform_param {\n'
                  '    mirror: true\n')


def test_missing_brace_names_the_block_left_open():
    # data_param lands in transform_param; LayerParameter, still open around it, takes it
    msg = _parse_error(TRAIN_VAL_HEAD + '  data_param { source: "db" batch_size: 4 }\n}\n')
    assert msg == ("net.prototxt:9:3: unknown field 'data_param' in TransformationParameter "
                   "(is a '}' missing? 'transform_param {' opened at line 7 is still open here)")


def test_missing_brace_at_end_of_file_names_every_open_block():
    msg = _parse_error(TRAIN_VAL_HEAD)
    assert msg == ("net.prototxt:8:13: end of file: 'transform_param {' opened at line 7 and "
                   "'layer {' opened at line 3 are not closed (2 closing braces are missing)")


def test_missing_brace_between_layers():
    msg = _parse_error('layer {\n  name: "a"\n  type: "ReLU"\nlayer <\n  name: "b"\n>\n')
    assert msg == ("net.prototxt:4:1: unknown field 'layer' in LayerParameter (is a '}' "
                   "missing? 'layer {' opened at line 1 is still open here)")
    msg = _parse_error('layer <\n  name: "a"\n')
    assert msg == ("net.prototxt:2:9: end of file: 'layer <' opened at line 1 is not closed "
                   "(a '>' is missing)")


def test_missing_brace_inside_a_list_of_blocks():
    text = ('layer: [ { name: "a" },\n'
            '  { name: "b"\n'
            '    transform_param { scale: 2\n'
            '    top: "b" } ]\n')
    assert _parse_error(text) == (
        "net.prototxt:4:5: unknown field 'top' in TransformationParameter (is a '}' missing? "
        "'transform_param {' opened at line 3 is still open here)")


def test_missing_brace_in_a_solver():
    text = 'net: "n"\ntrain_state { stage: "a"\nbase_lr: 0.1\n'
    assert _parse_error(text, caffe_pb2.SolverParameter()) == (
        "net.prototxt:3:1: unknown field 'base_lr' in NetState (is a '}' missing? "
        "'train_state {' opened at line 2 is still open here)")


def test_unknown_field_of_no_open_block_gets_no_brace_hint():
    msg = _parse_error(TRAIN_VAL_HEAD + '    mirorr: true\n  }\n}\n')
    assert msg == ("net.prototxt:9:5: unknown field 'mirorr' in TransformationParameter "
                   "(did you mean 'mirror'?)")


def test_solver_errors_too(tmp_path):
    path = write(tmp_path, 'net: "x"\nbase_lr: 0.1\nlr_polcy: "step"\n', "solver.prototxt")
    with pytest.raises(CaffeError, match=r"solver.prototxt:3:1: unknown field 'lr_polcy'.*"
                                         r"'lr_policy'"):
        prototxt.read_solver_param(path)


# --- odd files ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CaffeError, match=r"nope.prototxt: no such file"):
        prototxt.read_net_param(tmp_path / "nope.prototxt")


def test_directory(tmp_path):
    with pytest.raises(CaffeError, match=r"is a directory"):
        prototxt.read_solver_param(tmp_path)


@pytest.mark.parametrize("text", ["", "   \n\n", "\ufeff"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(CaffeError, match=r"net.prototxt: file is empty"):
        prototxt.read_net_param(path)
    with pytest.raises(CaffeError, match=r"file is empty"):
        prototxt.read_solver_param(path)


def test_binary_data(tmp_path):
    path = write(tmp_path, b'name: "x"\n\x08\x00\x12\x03abc')
    with pytest.raises(CaffeError, match=r"net.prototxt:2:2: not a text file"):
        prototxt.read_net_param(path)


def test_random_bytes(tmp_path):
    import numpy as np
    data = np.random.default_rng(0).integers(1, 256, 4000, dtype=np.uint8).tobytes()
    path = write(tmp_path, data)
    with pytest.raises(CaffeError) as err:
        prototxt.read_net_param(path)
    assert str(err.value).startswith(f"{path}:") and "\n" not in str(err.value)


def test_bad_utf8_outside_comment(tmp_path):
    path = write(tmp_path, b'name: "x"\nlayer { name: "\xff" }\n')
    with pytest.raises(CaffeError, match=r"net.prototxt:2:16: invalid UTF-8 byte 0xff"):
        prototxt.read_net_param(path)


def test_bad_utf8_inside_comment_is_ignored(tmp_path):
    # GBK / Latin-1 comments are common in legacy files; Caffe never reads them.
    path = write(tmp_path, b'name: "x"  # \xd6\xd0\xce\xc4 \xff\nlayer { name: "a#b" } # \xe9\n')
    param = prototxt.read_net_param(path)
    assert param.name == "x" and param.layer[0].name == "a#b"


def test_utf8_strings(tmp_path):
    path = write(tmp_path, 'name: "réseau"\n')
    assert prototxt.read_net_param(path).name == "réseau"


def test_parse_text_accepts_empty():
    # parse_text itself is protobuf's parser: empty text is a valid empty message.
    assert prototxt.parse_text("", caffe_pb2.NetParameter(), "x") == caffe_pb2.NetParameter()


# --- kinds and lines -------------------------------------------------------------------------

def test_detect_kind(tmp_path):
    assert prototxt.detect_kind(write(tmp_path, 'layer { name: "a" }')) == "net"
    assert prototxt.detect_kind(write(tmp_path, 'net: "a" base_lr: 0.1', "s.prototxt")) == \
        "solver"
    deephi = 'workspace: "w"\nmodel: "m"\nrate: 0.1\npruner { method: REGULAR }\n'
    assert prototxt.detect_kind(write(tmp_path, deephi, "c.prototxt")) == "deephi_config"
    assert prototxt.read_deephi_config(tmp_path / "c.prototxt").rate == pytest.approx(0.1)
    with pytest.raises(CaffeError):
        prototxt.detect_kind(write(tmp_path, "foo: 1", "bad.prototxt"))


def test_with_lines_modern(tmp_path):
    text = ('name: "n"\n'
            '# layer { name: "commented" }\n'
            'layer {\n  name: "a"\n  type: "Input"\n  top: "a"\n'
            '  input_param { shape { dim: 1 } }\n}\n'
            'layer: < name: "b" type: "ReLU" bottom: "a" top: "b" >\n'
            'state { phase: TEST }\n'
            'layer [ { name: "c" },\n  { name: "d" } ]\n')
    param, lines = prototxt.read_net_param(write(tmp_path, text), with_lines=True)
    assert [lp.name for lp in param.layer] == ["a", "b", "c", "d"]
    assert lines == [3, 9, 11, 12]


def test_with_lines_input_fields_and_v1(tmp_path):
    text = ('name: "n"\n'
            'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
            'layers {\n  name: "relu"\n  type: RELU\n  bottom: "data"\n  top: "r"\n}\n'
            'layers { name: "sig" type: SIGMOID bottom: "r" top: "s" }\n')
    param, lines = prototxt.read_net_param(write(tmp_path, text), with_lines=True)
    assert [lp.name for lp in param.layer] == ["input", "relu", "sig"]
    assert lines == [2, 7, 13]


def test_with_lines_v0_padding_dropped(tmp_path):
    text = ('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
            'layers { layer { name: "pad" type: "padding" pad: 1 }\n'
            '  bottom: "data" top: "pad" }\n'
            'layers { layer { name: "conv" type: "conv" num_output: 2 kernelsize: 3 }\n'
            '  bottom: "pad" top: "conv" }\n')
    param, lines = prototxt.read_net_param(write(tmp_path, text), with_lines=True)
    assert [lp.name for lp in param.layer] == ["input", "conv"]
    assert lines == [1, 8]


def test_top_level_fields_ignores_strings_and_comments():
    text = 'name: "layer {"  # layer {\nlayer { name: "}" }\nlayers{ }\n'
    assert prototxt.top_level_fields(text) == [("name", 1), ("layer", 2), ("layers", 3)]


def test_field_given_twice(tmp_path):
    path = write(tmp_path, 'name: "a"\nname: "b"\n')
    with pytest.raises(CaffeError, match=r"net.prototxt:2:7: field 'name' given twice"):
        prototxt.read_net_param(path)
