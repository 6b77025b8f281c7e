"""Where each field of a prototxt is written: protobuf's text parser keeps no positions.

`field_occurrences(text, descriptor)` walks the tokens of text that already parsed as
`descriptor` (the tokenizer of caffe_lite.io.prototxt), guided by the message descriptors: a
field's value is a message when it opens with `{` or `<` (`name {`, `name: {`), a list when it
opens with `[` (`name: [a, b]`, `name: [{...}, {...}]`), a scalar otherwise. It returns one
Occurrence per value, in file order, with the line and a readable place: the innermost layer
block (`layer 'conv1'`, V1 `layers 'conv1'`) and the field path below it, so that a solver's
nested `net_param { layer { param { block_group_lasso {...} } } }` reads
`net_param.layer 'conv1': param.block_group_lasso`.
"""
from dataclasses import dataclass

from .prototxt import _skip_block, _skip_scalar, _tokens

# Blocks named after their `name` field in readable places.
LAYER_MESSAGES = ("caffe.LayerParameter", "caffe.V1LayerParameter")

_OPEN = ("{", "<")
_CLOSE = ("}", ">")


@dataclass(frozen=True)
class Occurrence:
    """One value of one field, as written in the text."""
    field: object          # the FieldDescriptor
    line: int              # 1-based line of the field's name (of the element, inside a list)
    raw: str | None        # a scalar as written ('SPARSE_UPDATE', '0.8', '"a"'); None: a message
    where: str             # the innermost layer block and what leads to it, or ''
    dotted: str            # field names from that block (or the file's top) down to this one

    @property
    def message(self):
        """The containing message's name without the package ('QuantizationParameter.QParams')."""
        desc = self.field.containing_type
        package = desc.file.package
        return desc.full_name[len(package) + 1:] if package else desc.full_name

    @property
    def key(self):
        return self.message, self.field.name

    @property
    def place(self):
        """`layer 'conv1': param.block_group_lasso`, or `sparse_mode` at a file's top level."""
        return f"{self.where}: {self.dotted}" if self.where else self.dotted


def field_occurrences(text, descriptor, select=None, prune=None):
    """The values written in `text` (which parses as `descriptor`) of every field for which
    `select(field descriptor)` is true (all by default), in file order.

    A message value is walked into unless it was selected and `prune(occurrence)` is true.
    """
    walker = _Walker(list(_tokens(text)), select or (lambda field: True),
                     prune or (lambda occ: False))
    walker.fields(0, descriptor, "", ())
    return walker.found


class _Walker:
    def __init__(self, toks, select, prune):
        self.toks = toks
        self.select = select
        self.prune = prune
        self.found = []

    def fields(self, i, desc, where, path):
        """Read `name [:] value` pairs of message `desc` from token i; return the index after
        the block's closing token (or the end)."""
        toks = self.toks
        while i < len(toks):
            tok, line = toks[i][1], toks[i][2]
            if tok in _CLOSE:
                return i + 1
            if tok in (";", ","):
                i += 1
                continue
            if tok == "[":
                # an extension or Any name: Caffe's schema has none, so only skip it
                field = None
                i = self._after_brackets(i)
            else:
                field = desc.fields_by_name.get(tok)
                i += 1
            if i < len(toks) and toks[i][1] == ":":
                i += 1
            if i < len(toks) and toks[i][1] == "[":
                i = self._list(i + 1, field, where, path)
            elif i < len(toks):
                i = self._value(i, line, field, where, path)
        return i

    def _list(self, i, field, where, path):
        toks = self.toks
        while i < len(toks) and toks[i][1] != "]":
            if toks[i][1] == ",":
                i += 1
            else:
                i = self._value(i, toks[i][2], field, where, path)
        return i + 1

    def _value(self, i, line, field, where, path):
        toks = self.toks
        if toks[i][1] in _OPEN:
            if field is None:
                return _skip_block(toks, i)
            if field.message_type is None:
                return _skip_block(toks, i)
            if self.select(field) and self.prune(self._record(field, line, None, where, path)):
                return _skip_block(toks, i)
            if field.message_type.full_name in LAYER_MESSAGES:
                label = self._layer_label(field.name, i)
                inner_where = ".".join(filter(None, (where, ".".join(path), label)))
                return self.fields(i + 1, field.message_type, inner_where, ())
            return self.fields(i + 1, field.message_type, where, path + (field.name,))
        end = _skip_scalar(toks, i)
        if field is not None and self.select(field):
            self._record(field, line, _scalar_text(toks[i:end]), where, path)
        return end

    def _record(self, field, line, raw, where, path):
        occ = Occurrence(field, line, raw, where, ".".join(path + (field.name,)))
        self.found.append(occ)
        return occ

    def _layer_label(self, field_name, i):
        """`layer 'conv1'`: the block's own top-level `name`, wherever in the block it is."""
        toks = self.toks
        depth = 0
        while i < len(toks):
            tok = toks[i][1]
            if tok in _OPEN:
                depth += 1
            elif tok in _CLOSE:
                depth -= 1
                if depth == 0:
                    break
            elif (depth == 1 and tok == "name" and toks[i][0] == "ident"
                  and i + 2 < len(toks) and toks[i + 1][1] == ":"
                  and toks[i + 2][0] == "string"):
                return f"{field_name} '{toks[i + 2][1][1:-1]}'"
            i += 1
        return field_name

    def _after_brackets(self, i):
        toks = self.toks
        while i < len(toks) and toks[i][1] != "]":
            i += 1
        return i + 1


def _scalar_text(toks):
    """The scalar as written: `-` glued to its number, adjacent strings kept apart."""
    if toks and toks[0][1] == "-":
        return "-" + " ".join(t[1] for t in toks[1:])
    return " ".join(t[1] for t in toks)
