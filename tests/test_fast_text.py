"""io.fast_text against protobuf's text_format: the same message or a fallback, never a
different one; the same printed text; the same error messages from prototxt.parse_text."""
import random
from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe_lite.errors import CaffeError
from caffe_lite.io import fast_text, prototxt
from caffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
TEXT_FILES = sorted(p for folder in (ROOT / "models", CORPUS) if folder.is_dir()
                    for p in folder.rglob("*") if p.suffix in (".prototxt", ".solver"))
KINDS = (caffe_pb2.NetParameter, caffe_pb2.SolverParameter)


def reference(text, cls):
    """text_format.Parse's message, or None when it refuses the text."""
    message = cls()
    try:
        text_format.Parse(text, message)
    except (text_format.ParseError, ValueError):
        return None
    return message


def check(text, cls=caffe_pb2.NetParameter):
    """fast_text.parse gives text_format's message or gives up (message left empty).
    Returns whether it took the text."""
    want = reference(text, cls)
    got = cls()
    took = fast_text.parse(text, got)
    if took:
        assert want is not None, f"fast path took a text text_format refuses: {text!r}"
        assert got.SerializeToString() == want.SerializeToString() and got == want, text
        assert fast_text.to_string(want) == text_format.MessageToString(want)
    else:
        assert got.ByteSize() == 0
    return took


def read(path):
    return prototxt.decode_text(path.read_bytes(), path)


# --- real files ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", TEXT_FILES, ids=[p.name for p in TEXT_FILES])
def test_text_files_parse_and_print_the_same(path):
    text = read(path)
    took = [check(text, cls) for cls in KINDS]
    # Every net and solver that protobuf reads takes the fast path.
    assert any(took) == any(reference(text, cls) is not None for cls in KINDS)


def test_chunk_boundaries(monkeypatch):
    # Tiny chunks: a cut after each `}` that ends a line, as in a 50 MB file.
    monkeypatch.setattr(fast_text, "_CHUNK", 1)
    nets = [p for p in TEXT_FILES if "lenet" in p.name or "cifar" in p.name][:6]
    assert nets
    for path in nets:
        assert check(read(path)) or check(read(path), caffe_pb2.SolverParameter)
    assert check('layer { name: "a" }\n, layer { name: "b" }\n;')
    assert not check('layer { name: "a" }\n,, layer { name: "b" }\n')
    assert not check('layer { name: "a" }\n}\n')


def test_large_net_matches_text_format():
    text = "".join(f'layers {{ name: "r{i}" type: RELU bottom: "r{i - 1}" top: "r{i}" }}\n'
                   for i in range(40000))
    assert len(text) > 2 * fast_text._CHUNK
    assert check('input: "r-1"\ninput_dim: 1\n' + text)


# --- the syntax, one case at a time ---------------------------------------------------------

TAKEN = [
    'name: "a"',
    "name: 'a'",
    'name:"a"layer{name:"b"}',
    'layer < name: "a" >',
    'layer: { name: "a" }',
    'layer {}',
    'layer { name: "a", type: "b"; }',
    'layer { transform_param { } }',
    'name: "a" # comment: with { and "\n# another } comment\nlayer { }',
    'name: "\\303\\251\\x41\\n\\t\\"\\\'"',
    'name: "é \u2028"',
    'layer { bottom: "a" bottom: "b" top: "c" }',
    'layer { param { lr_mult: 1 } param { lr_mult: 2.5e-3 decay_mult: -0.0 } }',
    'layer { param { lr_mult: nan decay_mult: -inf } }',
    'layer { param { lr_mult: 1.0f decay_mult: .5 } }',
    'layer { convolution_param { num_output: 0x10 kernel_size: 010 pad: 0 } }',
    'layer { convolution_param { bias_term: t } } layer { convolution_param { bias_term: 0 } }',
    'layer { convolution_param { bias_term: True } }',
    'layer { pooling_param { pool: AVE } }',
    'layer { pooling_param { pool: 1 } }',
    'state { phase: TEST level: -3 stage: "x" }',
    'input_dim: 2147483647 input_dim: -2147483648',
    'layer { convolution_param { num_output: 4294967295 } }',
    'layer { include { phase: TRAIN } exclude { stage: "a" } }',
    'layer\n{\n\tname\n:\n"a"\n}\r\n\x0b\x0c',
    'layer { blobs { data: 1 data: 2 diff: 3e38 } }',
    '',
    '  \n # only a comment',
]

FALLBACK = [
    'name: "a" "b"',                      # string concatenation
    'input_dim: [1, 2]',                  # list syntax
    'input: ["a"]',
    'name: "a" name: "b"',                # duplicate singular field (an error)
    'layer { transform_param { } transform_param { } }',
    'nme: "a"',                           # unknown field (an error)
    'name "a"',                           # missing colon (an error)
    'layer { name: "a"',                  # missing brace (an error)
    'layer { name: "a" } }',
    'layer { name: "a" >',
    'layer < name: "a" }',
    ', name: "a"',
    'name: "a",,',
    'layer { , }',
    'name: a',                            # a string without quotes (an error)
    'name: "a',                           # unterminated string (an error)
    'input_dim: 2147483648',              # out of range (an error)
    'layer { convolution_param { num_output: -1 } }',
    'input_dim: 1.5',
    'layer { pooling_param { pool: 7 } }',  # no such enum value (an error)
    'layer { pooling_param { pool: "MAX" } }',
    'layer { convolution_param { bias_term: yes } }',
    'layer { param { lr_mult: 01.5 } }',  # octal float (an error)
    'layer: "a"',                         # a message field written as a scalar
    'name: { }',
    'name: "\\xZZ"',
    'name: "\\377"',                      # not UTF-8 (an error)
    '[ext]: 1',
    'layer { name: - "a" }',
]


@pytest.mark.parametrize("text", TAKEN)
def test_fast_path_takes(text):
    assert check(text)


@pytest.mark.parametrize("text", FALLBACK)
def test_fast_path_gives_up(text):
    assert not check(text)


def test_deep_nesting_goes_to_text_format(monkeypatch):
    monkeypatch.setattr(fast_text, "_MAX_DEPTH", 1)
    assert check('layer { name: "a" }')
    assert not check('layer { include { phase: TRAIN } }')


def test_only_into_an_empty_message():
    # text_format.Parse merges into what is there; the fast path leaves that case to it.
    message = caffe_pb2.NetParameter()
    assert fast_text.parse('layer { name: "x" }', message)
    assert not fast_text.parse('layer { name: "y" }', message)
    assert [lp.name for lp in message.layer] == ["x"]


def test_mutated_files_never_parse_differently():
    rng = random.Random(7)
    texts = [read(p)[:4000] for p in TEXT_FILES if p.suffix == ".prototxt"][:40]
    pieces = ['{', '}', '<', '>', ':', ',', ';', '"', "'", '#', '\n', ' ', '[', ']', '-',
              '01', '0x1F', '1e5', 'inf', 'nan', 't', 'name', 'layer', 'top', '\\', 'é',
              '4294967296', 'bottom: "a" "b"', 'include { phase: TRAIN }', 'pool: 2']
    taken = 0
    for _ in range(300):
        chars = list(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars) + 1)
            if rng.random() < 0.4 and chars:
                del chars[min(at, len(chars) - 1)]
            else:
                chars.insert(at, rng.choice(pieces))
        text = "".join(chars)
        taken += sum(check(text, cls) for cls in KINDS)
    assert taken > 20


# --- printing --------------------------------------------------------------------------------

def test_printing_matches_text_format():
    net = caffe_pb2.NetParameter(name="".join(chr(c) for c in range(1, 0x300)) + "\U0001F600")
    layer = net.layer.add(name='q"\'\\', type="ReLU", bottom=["a", "b\n"], loss_weight=[1, 0.1])
    layer.param.add(lr_mult=float("nan"), decay_mult=-0.0)
    layer.param.add(lr_mult=float("inf"), decay_mult=1e-45)
    layer.param.add(lr_mult=0.0, decay_mult=3.4028234663852886e38)
    layer.transform_param.SetInParent()
    layer.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    layer.convolution_param.bias_term = False
    layer.blobs.add(data=[0.1, 2.5], double_data=[0.1, 1e300, float("-inf")])
    net.state.level = -7
    datum = caffe_pb2.Datum(data=bytes(range(256)), encoded=True, label=-1)
    for message in (net, datum, caffe_pb2.NetParameter()):
        assert fast_text.to_string(message) == text_format.MessageToString(message)


def test_printing_many_layers_in_chunks():
    net = caffe_pb2.NetParameter()
    for i in range(3 * fast_text._FLUSH // 4):
        net.layer.add(name=f"r{i}", bottom=[f"r{i - 1}"], top=[f"r{i}"])
    assert fast_text.to_string(net) == text_format.MessageToString(net)


# --- errors are text_format's -------------------------------------------------------------

@pytest.mark.parametrize("text", [t for t in FALLBACK if reference(t, caffe_pb2.NetParameter)
                                  is None])
def test_parse_text_errors_are_unchanged(text, monkeypatch):
    def error(text):
        with pytest.raises(CaffeError) as info:
            prototxt.parse_text(text, caffe_pb2.NetParameter(), "net.prototxt")
        return str(info.value)
    fast = error(text)
    monkeypatch.setattr(fast_text, "parse", lambda text, message: False)
    assert fast == error(text)
