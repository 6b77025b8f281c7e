"""Read Caffe's text files: nets, solvers and DeePhi prune configs.

Caffe's `ReadProtoFromTextFile` is protobuf's text parser plus nothing; ours is the same parser
(google.protobuf.text_format) with errors turned into one line `path:line:col: message` that
names the field, the bad enum value (and the valid ones) or the bad value. On top of that:
- a missing file, a folder, an empty file, binary data or bad UTF-8 are clear errors;
- undecodable bytes inside `#` comments are tolerated (legacy files carry Latin-1 and GBK
  comments that Caffe never looks at);
- nets and solvers are upgraded as `ReadNetParamsFromTextFileOrDie` and
  `ReadSolverParamsFromTextFileOrDie` do (caffe_lite.io.upgrade).
Plain texts (nearly every net and solver) are read by io.fast_text, which builds the message
text_format would, several times faster; any other text, and every error, is text_format's.
"""
import copy
import difflib
import os
import re

from google.protobuf import text_format

from ..errors import CaffeError
from . import fast_text
from . import upgrade as _upgrade
from .input_file import read_input

_LOC_PREFIX = re.compile(r"^\d+(?::\d+)? : ")
_NO_FIELD = re.compile(r'^Message type "([\w.]+)" has no field named "([^"]+)"\.$')
_NO_ENUM = re.compile(r'^Enum type "([\w.]+)" has no value named (.+?)\.$')
_NO_ENUM_NUM = re.compile(r'^Enum type "([\w.]+)" has no value with number (-?\d+)\.$')
_EXPECTED_CLOSE = re.compile(r'^Expected "[}>]"\.$')
_CLOSE = {"{": "}", "<": ">"}
_TWICE = re.compile(r'^Message type "([\w.]+)" should not have multiple "([^"]+)" fields\.$')


def _pb2():
    from ..proto import caffe_pb2
    return caffe_pb2


# ---------------------------------------------------------------------------------------------
# Reading the file

def read_text_file(path, what="file"):
    """Return the text of `path`, or raise a CaffeError that says why it cannot be a prototxt."""
    path = os.fspath(path)
    return decode_text(read_input(path, what), path)


def decode_text(data, path):
    """UTF-8 bytes -> str; bad bytes are dropped inside comments and an error elsewhere."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _line_col(data, nul)
        raise CaffeError("not a text file (binary data here); a .caffemodel, .solverstate or "
                         ".binaryproto is binary, a .prototxt is text", path, line, col)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out = []
    offset = 0
    for raw in data.splitlines(keepends=True):
        cut = _comment_start(raw)
        code, comment = raw[:cut], raw[cut:]
        try:
            out.append(code.decode("utf-8"))
        except UnicodeDecodeError as err:
            line, col = _line_col(data, offset + err.start)
            raise CaffeError(f"invalid UTF-8 byte 0x{code[err.start]:02x} (not a text prototxt?)",
                             path, line, col) from None
        out.append(comment.decode("utf-8", errors="replace"))
        offset += len(raw)
    return "".join(out)


def _comment_start(raw: bytes):
    """Index of the `#` that starts a comment on this line (outside quotes), or len(raw)."""
    quote = None
    i = 0
    while i < len(raw):
        c = raw[i]
        if quote is not None:
            if c == 0x5C:  # backslash escapes the next byte inside a string
                i += 1
            elif c == quote:
                quote = None
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x23:
            return i
        i += 1
    return len(raw)


def _line_col(data: bytes, offset):
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    col = len(data[start:offset].decode("utf-8", errors="replace")) + 1
    return line, col


def _require_content(text, path, what):
    if not text.strip():
        raise CaffeError(f"file is empty (expected a {what})", path)


# ---------------------------------------------------------------------------------------------
# Parsing

def parse_text(text, message, path):
    """Parse protobuf text into `message` (cleared first), as Caffe's TextFormat::Parse.

    A syntax error becomes CaffeError `path:line:col: message`, naming the field and the bad
    value. Returns `message`.
    """
    try:
        # The fast path covers plain nets and solvers; anything else, and every error, is
        # text_format's (fast_text.parse clears the message when it gives up).
        if not fast_text.parse(text, message):
            text_format.Parse(text, message)
    except text_format.ParseError as err:
        line, col = err.GetLine(), err.GetColumn()
        raise CaffeError(_explain(str(err), text, line, col, message.DESCRIPTOR),
                         path, line, col) from None
    except RecursionError:
        raise CaffeError("messages nested too deeply", path) from None
    return message


def _explain(raw, text, line, col, root):
    msg = _LOC_PREFIX.sub("", raw, count=1)
    src = _source_line(text, line)
    if src is not None and msg.startswith("'" + src + "': "):
        msg = msg[len(src) + 4:]
    m = _NO_FIELD.match(msg)
    if m:
        hint = _missing_brace_hint(text, line, col, root, m.group(2))
        if hint:
            return f"unknown field '{m.group(2)}' in {m.group(1).split('.')[-1]} {hint}"
        return _explain_field(m.group(1), m.group(2))
    if _EXPECTED_CLOSE.match(msg):
        unclosed = _unclosed_at_end(text, line, col)
        if unclosed:
            return unclosed
    m = _TWICE.match(msg)
    if m:
        return (f"field '{m.group(2)}' given twice in {m.group(1).split('.')[-1]} "
                "(it is not repeated)")
    m = _NO_ENUM.match(msg) or _NO_ENUM_NUM.match(msg)
    if m:
        values = _enum_values(m.group(1))
        field = _field_before(src, col)
        where = f" for field '{field}'" if field else ""
        return (f"unknown value {m.group(2)}{where} (enum {m.group(1)}; "
                f"values: {', '.join(values)})" if values else msg)
    field = _field_before(src, col)
    if field and "field" not in msg:
        return f"field '{field}': {msg}"
    return msg


def _explain_field(message_type, field):
    try:
        desc = _pb2().DESCRIPTOR.pool.FindMessageTypeByName(message_type)
    except KeyError:
        return f"unknown field '{field}' in {message_type}"
    names = [f.name for f in desc.fields]
    close = difflib.get_close_matches(field, names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown field '{field}' in {message_type.split('.')[-1]}{hint}"


def _missing_brace_hint(text, line, col, root, field):
    """For `field` unknown where the parser is: if a block still open around it takes that
    field, a '}' is likely missing; name the innermost open block and its line."""
    blocks = _open_blocks(text[:_offset(text, line, col)])
    if not blocks:
        return ""
    enclosing = _block_types(root, blocks)[:-1]
    if not any(desc is not None and field in desc.fields_by_name for desc in enclosing):
        return ""
    name, opened, brace = blocks[-1]
    return (f"(is a '{_CLOSE[brace]}' missing? {_block_label(name, brace)} opened at line "
            f"{opened} is still open here)")


def _unclosed_at_end(text, line, col):
    """When the parser stopped at the last token: which blocks the file leaves open."""
    if len(list(_tokens(text[_offset(text, line, col):]))) > 1:
        return None
    blocks = _open_blocks(text)
    if not blocks:
        return None
    opened = " and ".join(f"{_block_label(name, brace)} opened at line {at}"
                          for name, at, brace in reversed(blocks))
    if len(blocks) == 1:
        return f"end of file: {opened} is not closed (a '{_CLOSE[blocks[0][2]]}' is missing)"
    return f"end of file: {opened} are not closed ({len(blocks)} closing braces are missing)"


def _open_blocks(text):
    """[(field name, line, brace)] of the message blocks still open at the end of `text`,
    outermost first. Elements of a `name: [ {...} ]` list are blocks named `name`."""
    stack = []          # blocks, and the `[` of lists (brace "[")
    before = []         # the last two tokens
    for kind, tok, line in _tokens(text):
        if tok in _CLOSE:
            stack.append((_block_name(before, stack), line, tok))
        elif tok == "[":
            stack.append((before[-2][1] if _is_field(before) else None, line, tok))
        elif stack and ((tok == "]" and stack[-1][2] == "[")
                        or tok == _CLOSE.get(stack[-1][2])):
            stack.pop()
        before = (before + [(kind, tok)])[-2:]
    return [block for block in stack if block[2] != "["]


def _block_label(name, brace):
    return f"'{name} {brace}'" if name else f"'{brace}'"


def _is_field(before):
    """The last two tokens are `name :`."""
    return len(before) == 2 and before[-1][1] == ":" and before[-2][0] == "ident"


def _block_name(before, stack):
    """The field a `{` opens: `name {`, `name: {`, or an element of the list `name: [`."""
    if before and before[-1][0] == "ident":
        return before[-1][1]
    if _is_field(before):
        return before[-2][1]
    if before and before[-1][1] in ("[", ",") and stack and stack[-1][2] == "[":
        return stack[-1][0]
    return None


def _block_types(root, blocks):
    """The message descriptor of `root` and of each open block (None past an unknown name)."""
    descs = [root]
    for name, _, _ in blocks:
        field = descs[-1].fields_by_name.get(name) if descs[-1] is not None else None
        descs.append(field.message_type if field is not None else None)
    return descs


def _offset(text, line, col):
    """The index in `text` of 1-based `line`, `col` (the end, past the last line)."""
    lines = text.split("\n")
    if line > len(lines):
        return len(text)
    return sum(len(ln) + 1 for ln in lines[:line - 1]) + max(col - 1, 0)


def _enum_values(full_name):
    try:
        desc = _pb2().DESCRIPTOR.pool.FindEnumTypeByName(full_name)
    except KeyError:
        return []
    return [v.name for v in desc.values]


def _source_line(text, line):
    if not line:
        return None
    lines = text.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else None


def _field_before(src, col):
    """The field name written just before column `col` of `src` (`name: value`), if any."""
    if not src or not col:
        return None
    m = re.search(r"([A-Za-z_][\w]*)\s*:?\s*(?:\"[^\"]*\"\s*|'[^']*'\s*)*-?\s*$", src[:col - 1])
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# Nets, solvers, DeePhi configs

def read_net_param(path, with_lines=False):
    """Read and upgrade a text NetParameter (Caffe's ReadNetParamsFromTextFileOrDie).

    With `with_lines`, return (param, lines): lines[i] is the 1-based line where the block of
    the final param.layer[i] starts in the file (None where it has none).
    """
    text = read_text_file(path)
    _require_content(text, path, "NetParameter")
    param = parse_text(text, _pb2().NetParameter(), path)
    _check_fork_fields(text, param, path)
    original = copy.deepcopy(param) if with_lines else None
    _upgrade.upgrade_net_param(param, path)
    if not with_lines:
        return param
    return param, _final_layer_lines(original, param, top_level_fields(text))


def read_solver_param(path):
    """Read and upgrade a text SolverParameter (ReadSolverParamsFromTextFileOrDie).

    A relative `net:` path stays as written; Caffe resolves it against the working folder.
    """
    text = read_text_file(path)
    _require_content(text, path, "SolverParameter")
    param = parse_text(text, _pb2().SolverParameter(), path)
    _check_fork_fields(text, param, path)
    _upgrade.upgrade_solver_param(param, path)
    return param


def _check_fork_fields(text, param, path):
    # imported here: compress.fork_fields reads this module's tokenizer
    from ..compress.fork_fields import check_fork_fields
    check_fork_fields(text, param.DESCRIPTOR, path)


def deephi_config_class():
    """The schema's message for DeePhi/Xilinx `deephi_compress` prune configs, or None."""
    pb2 = _pb2()
    names = pb2.DESCRIPTOR.message_types_by_name
    if "DeephiPruneConfig" in names:
        return pb2.DeephiPruneConfig
    for name in sorted(names):
        low = name.lower()
        if "deephi" in low or ("prun" in low and "config" in low):
            return getattr(pb2, name)
    return None


def read_deephi_config(path):
    """Read a DeePhi prune config (`workspace`, `model`, `rate`, `pruner { method }`, ...)."""
    cls = deephi_config_class()
    if cls is None:
        raise CaffeError("this schema has no DeePhi prune config message", path)
    text = read_text_file(path)
    _require_content(text, path, "DeePhi prune config")
    return parse_text(text, cls(), path)


def detect_kind(path):
    """'net', 'solver' or 'deephi_config': the first message the text file parses as.

    Raises the NetParameter parse error when it parses as none of them.
    """
    text = read_text_file(path)
    _require_content(text, path, "NetParameter or SolverParameter")
    pb2 = _pb2()
    kinds = [("net", pb2.NetParameter), ("solver", pb2.SolverParameter)]
    cls = deephi_config_class()
    if cls is not None:
        kinds.append(("deephi_config", cls))
    first_error = None
    for kind, msg_cls in kinds:
        try:
            parse_text(text, msg_cls(), path)
            return kind
        except CaffeError as err:
            first_error = first_error or err
    raise first_error


# ---------------------------------------------------------------------------------------------
# Where each layer starts

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[A-Za-z_][\w.]*) | (?P<number>[-+]?[\w.+-]+)
  | (?P<punct>.)""", re.VERBOSE)


def _tokens(text):
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            yield kind, m.group(), line


def top_level_fields(text):
    """[(field name, line)] for each value of each top-level field, in file order.

    Elements of a `name: [ {...}, {...} ]` list count one each, at the line of their `{`.
    Only meaningful on text that parses.
    """
    out = []
    toks = list(_tokens(text))
    i, n = 0, len(toks)
    while i < n:
        kind, tok, line = toks[i]
        if kind != "ident":
            i += 1
            continue
        name = tok
        i += 1
        if i < n and toks[i][1] == ":":
            i += 1
        if i >= n:
            out.append((name, line))
            break
        if toks[i][1] in ("{", "<"):
            out.append((name, line))
            i = _skip_block(toks, i)
        elif toks[i][1] == "[":
            i += 1
            while i < n and toks[i][1] != "]":
                if toks[i][1] in ("{", "<"):
                    out.append((name, toks[i][2]))
                    i = _skip_block(toks, i)
                elif toks[i][1] == ",":
                    i += 1
                else:
                    out.append((name, toks[i][2]))
                    i = _skip_scalar(toks, i)
            i += 1
        else:
            out.append((name, line))
            i = _skip_scalar(toks, i)
        if i < n and toks[i][1] in (";", ","):
            i += 1
    return out


def _skip_block(toks, i):
    depth = 0
    while i < len(toks):
        tok = toks[i][1]
        if tok in ("{", "<"):
            depth += 1
        elif tok in ("}", ">"):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _skip_scalar(toks, i):
    if toks[i][1] == "-":
        i += 1
    if i < len(toks) and toks[i][0] == "string":
        while i < len(toks) and toks[i][0] == "string":
            i += 1
        return i
    return i + 1


def _final_layer_lines(original, final, fields):
    layer_lines = [line for name, line in fields if name == "layer"]
    layers_lines = [line for name, line in fields if name == "layers"]
    if len(original.layers):
        lines = layers_lines
        if _upgrade.net_needs_v0_to_v1_upgrade(original):
            lines = [ln for ln, lp in zip(lines, original.layers) if lp.layer.type != "padding"]
    else:
        lines = layer_lines
    input_lines = [line for name, line in fields if name == "input"]
    if (len(original.input_shape) or len(original.input_dim)) and len(original.input):
        lines = [input_lines[0] if input_lines else None] + list(lines)
    lines = list(lines)[:len(final.layer)]
    return lines + [None] * (len(final.layer) - len(lines))
