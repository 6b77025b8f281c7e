"""A fast path for protobuf text format: parse and print the plain text that nets are.

protobuf's text_format is pure Python even on the upb backend: it reads one token per
method call and prints one `out.write` at a time, so a 50 MB net (763,000 layers) takes tens
of seconds each way. This module does the same work with one regex match per field:

- `parse(text, message)` makes the calls text_format.Parse makes on the message (`add()`,
  `SetInParent()`, `append()`, `setattr`, the same duplicate-field checks) with the values
  text_format reads (plain spellings directly, others through text_format.ParseInteger,
  ParseFloat, ParseEnum, ParseBool and CUnescape), so a text it accepts gives the same
  message. It accepts `name: value`, `name {` (`name: {`, `name <`), `}` (`>`) and the
  optional `,` or `;` after a field, with `#` comments, a value being one token. On anything
  else (an unknown field, a value text_format refuses, `[1, 2]` lists, `"a" "b"`
  concatenation, extensions, a missing brace, any syntax error) it returns False with the
  message cleared, and the caller runs text_format.Parse, which gives its own result or
  error: every error message still comes from text_format.
- `to_string(message)` prints what text_format.MessageToString prints (default options),
  with the same value formatting; a message with extensions, maps, groups or Any is printed
  by text_format itself.
"""
import math
import re

from google.protobuf import descriptor, text_encoding, text_format
from google.protobuf.internal import type_checkers

FD = descriptor.FieldDescriptor
_ANY = "google.protobuf.Any"     # text_format reads and prints it in its own way

# ---------------------------------------------------------------------------------------------
# Parsing

# text_format.Tokenizer's token rules, spelled for a whole text instead of one line:
# whitespace (\s, Unicode) and `#` comments to the end of the line separate tokens;
# identifiers, numbers and quoted strings (which cannot span lines) are as in
# Tokenizer._TOKEN. Each part can match a piece of text in one way only, so a failing match
# cannot backtrack for long (`(?:\s+)*` would be exponential) nor read a comment or a name as
# something else.
_WS = r"\s*(?:#[^\n]*(?![^\n])\s*)*"
_IDENT = r"[a-zA-Z_][0-9a-zA-Z_+-]*"
_NUMBER = r"(?:[0-9+-]|\.[0-9])[0-9a-zA-Z_.+-]*"
_STRING = r""""[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'"""
# One field per match, as the groups (name, colon, value, opening, punct, bad):
#   name: value    name { (also `name: {`, `name <`)    } > , ;    anything else;
# a match with all groups empty is the end of the text. (findall gives '' for a group that
# did not match; no token is empty.) A shorter name than the whole token can only match
# with no colon, which _parse refuses.
_STATEMENT = re.compile(
    _WS + "(?:"
    rf"({_IDENT}){_WS}(?:(:){_WS})?(?:({_STRING}|{_NUMBER}|{_IDENT})|([{{<]))"
    r"|([}>,;])"
    r"|\Z"
    r"|([\s\S]))")
# Texts are matched a chunk at a time (findall on a whole 50 MB net would hold millions of
# tuples). A chunk ends after a `}` that ends a line: tokens never span lines, so that is
# always between two statements.
_CHUNK = 1 << 20

# Numbers that int() and float() read as text_format does; other spellings (hex, octal,
# '1.0f', 'inf', ...) go through text_format's own ParseInteger / ParseFloat.
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_MAX_DEPTH = 64          # deeper texts go to text_format (and its recursion handling)

# Field kinds
_MESSAGE, _STR, _BYTES, _INTEGER, _REAL, _BOOL, _ENUM = range(7)
# Integer field types: (low, high, is_signed, is_long), as text_format._MergeScalarField
# calls ParseInteger for them.
_INT32 = (-2**31, 2**31 - 1, True, False)
_UINT32 = (0, 2**32 - 1, False, False)
_INT64 = (-2**63, 2**63 - 1, True, True)
_UINT64 = (0, 2**64 - 1, False, True)
_INT_TYPES = {
    FD.TYPE_INT32: _INT32, FD.TYPE_SINT32: _INT32, FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_UINT32: _UINT32, FD.TYPE_FIXED32: _UINT32,
    FD.TYPE_INT64: _INT64, FD.TYPE_SINT64: _INT64, FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64, FD.TYPE_FIXED64: _UINT64,
}

_tables = {}


class _Unsupported(Exception):
    """The text (or message) is outside what this module handles: use text_format."""


def parse(text, message):
    """Parse `text` into `message` as text_format.Parse would; False (message cleared) when
    the text is outside the fast subset, or when `message` is not empty to begin with."""
    if message.ByteSize():
        return False
    try:
        _parse(text, message)
    except _Unsupported:
        message.Clear()
        return False
    return True


def _parse(text, message):
    fields = _table(message.DESCRIPTOR)
    msg, close = message, None
    stack = []
    after_field = False      # a `,` or `;` may follow a field, once
    for start, stop in _chunks(text):
        for name, colon, value, opening, punct, bad in _STATEMENT.findall(text, start, stop):
            if value:
                spec = fields.get(name)
                if spec is None or not colon:
                    raise _Unsupported
                attr, kind, repeated, _, _ = spec
                if kind == _STR and value[0] == '"' and value.isascii() and "\\" not in value:
                    value = value[1:-1]      # a plain string: no unescaping to do
                else:
                    value = _scalar(spec, value)
                if repeated:
                    getattr(msg, attr).append(value)
                elif msg.HasField(attr):     # text_format.Parse refuses a second one
                    raise _Unsupported
                else:
                    setattr(msg, attr, value)
                after_field = True
            elif opening:
                spec = fields.get(name)
                if spec is None or spec[1] != _MESSAGE or len(stack) >= _MAX_DEPTH:
                    raise _Unsupported
                stack.append((msg, fields, close))
                msg = getattr(msg, spec[0]).add() if spec[2] else _open_message(msg, spec)
                fields = _tables.get(spec[3]) or _table(spec[3])
                close = "}" if opening == "{" else ">"
                after_field = False
            elif punct:
                if punct == close:
                    msg, fields, close = stack.pop()
                    after_field = True
                elif punct in ",;" and after_field:
                    after_field = False
                else:
                    raise _Unsupported
            elif bad:
                raise _Unsupported
    if stack:
        raise _Unsupported


def _chunks(text):
    """(start, stop) of the chunks of `text` (see _CHUNK)."""
    start = 0
    while start < len(text):
        cut = text.find("}\n", start + _CHUNK)
        stop = len(text) if cut < 0 else cut + 1
        yield start, stop
        start = stop


def _open_message(msg, spec):
    """The singular message field of `spec` in `msg`, present from now on."""
    attr = spec[0]
    if msg.HasField(attr):       # text_format.Parse refuses a second one
        raise _Unsupported
    sub = getattr(msg, attr)
    sub.SetInParent()
    return sub


def _scalar(spec, token):
    """The value text_format reads from `token` for the field of `spec`: common spellings
    directly, the others through text_format's own Parse* functions."""
    _, kind, _, extra, field = spec
    try:
        if kind == _STR:
            return str(_unescape(token), "utf-8")
        if kind == _INTEGER:
            if _INT.match(token):
                value = int(token)
                if extra[0] <= value <= extra[1]:
                    return value
                raise _Unsupported
            return text_format.ParseInteger(token, is_signed=extra[2], is_long=extra[3])
        if kind == _REAL:
            return float(token) if _FLOAT.match(token) else text_format.ParseFloat(token)
        if kind == _ENUM:
            number = extra.get(token)
            return number if number is not None else text_format.ParseEnum(field, token)
        if kind == _BOOL:
            return text_format.ParseBool(token)
        if kind == _BYTES:
            return _unescape(token)
    except ValueError:          # text_format's error (UnicodeError is a ValueError)
        pass
    raise _Unsupported          # and a message field written `name: value`


def _unescape(token):
    """The bytes of one quoted string token, as Tokenizer._ConsumeSingleByteString."""
    if token[0] not in "\"'":
        raise _Unsupported
    return text_encoding.CUnescape(token[1:-1])


def _table(desc):
    """{field name: (attribute, kind, repeated, extra, field descriptor)} for the fields of
    message `desc` this module parses; extra is an integer's _INT_TYPES entry, an enum's
    {name: number}, a message field's message descriptor."""
    table = _tables.get(desc)
    if table is None:
        table = _tables[desc] = {}
        if desc.full_name != _ANY:
            for field in desc.fields:
                spec = _field_spec(field)
                if spec is not None:
                    table[field.name] = spec
    return table


def _field_spec(field):
    kind, extra = _field_kind(field)
    if kind is None:
        return None
    return (field.name, kind, field.is_repeated, extra, field)


def _field_kind(field):
    if field.containing_oneof is not None or not (field.is_repeated or field.has_presence):
        return None, None       # oneof conflicts, proto3 defaults: text_format's own checks
    if field.type == FD.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            return None, None
        return _MESSAGE, field.message_type
    if field.type == FD.TYPE_STRING:
        return _STR, None
    if field.type == FD.TYPE_BYTES:
        return _BYTES, None
    if field.type in _INT_TYPES:
        return _INTEGER, _INT_TYPES[field.type]
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return _REAL, None
    if field.type == FD.TYPE_BOOL:
        return _BOOL, None
    if field.type == FD.TYPE_ENUM:
        return _ENUM, {v.name: v.number for v in field.enum_type.values}
    return None, None           # groups


# ---------------------------------------------------------------------------------------------
# Printing

_printers = {}
_float_texts = {}
# Strings CEscape(s, as_utf8=True) leaves as they are: printable ASCII but ' " and \.
# (Checking costs a tenth of str.translate, which CEscape runs on every string.)
_PLAIN = re.compile(r"[ !#-&(-\[\]-~]*\Z").match
_FLUSH = 1 << 16
# Printer kinds
_SUB, _SUBS, _SCALAR, _SCALARS, _TEXT, _TEXTS = range(6)


def to_string(message):
    """text_format.MessageToString(message), default options."""
    if message.DESCRIPTOR.full_name == _ANY:
        return text_format.MessageToString(message)
    chunks, out = [], []
    try:
        _print_message(message, "", out, chunks)
    except _Unsupported:
        return text_format.MessageToString(message)
    chunks.append("".join(out))
    return "".join(chunks)


def _print_message(msg, indent, out, chunks):
    """Append the lines of `msg` to `out`; every _FLUSH lines or so, `out` is joined into one
    string in `chunks` (millions of small strings take several times the memory of the
    text they make)."""
    append = out.append
    for field, value in msg.ListFields():
        printer = _printers.get(field)
        if printer is None:
            printer = _printers[field] = _field_printer(field)
        kind, name, fmt = printer
        if kind == _TEXTS:
            for item in value:
                append(f'{indent}{name}: "{item if _PLAIN(item) else _escape(item)}"\n')
        elif kind == _TEXT:
            append(f'{indent}{name}: "{value if _PLAIN(value) else _escape(value)}"\n')
        elif kind == _SUBS:
            opening, closing, inner = f"{indent}{name} {{\n", f"{indent}}}\n", indent + "  "
            for sub in value:
                append(opening)
                _print_message(sub, inner, out, chunks)
                append(closing)
                if len(out) >= _FLUSH:
                    chunks.append("".join(out))
                    out.clear()
        elif kind == _SUB:
            append(f"{indent}{name} {{\n")
            _print_message(value, indent + "  ", out, chunks)
            append(f"{indent}}}\n")
        elif kind == _SCALARS:
            for item in value:
                append(f"{indent}{name}: {fmt(item)}\n")
        else:
            append(f"{indent}{name}: {fmt(value)}\n")


def _escape(value):
    return text_encoding.CEscape(value, True)     # as_utf8=True, MessageToString's default


def _field_printer(field):
    """(kind, name, value -> text) for `field`, as text_format's _Printer.PrintField and
    PrintFieldValue write it."""
    if (field.is_extension or field.type == FD.TYPE_GROUP
            or (field.message_type is not None
                and (field.message_type.GetOptions().map_entry
                     or field.message_type.full_name == _ANY))):
        raise _Unsupported
    repeated = field.is_repeated
    if field.cpp_type == FD.CPPTYPE_MESSAGE:
        return (_SUBS if repeated else _SUB), field.name, None
    if field.type == FD.TYPE_STRING:
        return (_TEXTS if repeated else _TEXT), field.name, None
    return (_SCALARS if repeated else _SCALAR), field.name, _value_format(field)


def _value_format(field):
    if field.cpp_type == FD.CPPTYPE_ENUM:
        names = {number: value.name for number, value in field.enum_type.values_by_number.items()}
        return lambda value: names.get(value) or str(value)
    if field.type == FD.TYPE_BYTES:
        return lambda value: f'"{text_encoding.CEscape(value, False)}"'
    if field.cpp_type == FD.CPPTYPE_BOOL:
        return lambda value: "true" if value else "false"
    if field.cpp_type == FD.CPPTYPE_FLOAT:
        return _format_float
    return str                               # integers and doubles


def _format_float(value):
    if math.isnan(value):
        return str(value)
    if value == 0:                           # 0.0 and -0.0 are one key in a dict
        return str(type_checkers.ToShortestFloat(value))
    text = _float_texts.get(value)
    if text is None:
        text = str(type_checkers.ToShortestFloat(value))
        if len(_float_texts) < 65536:
            _float_texts[value] = text
    return text
