"""A fork's caffemodel seen as weights only: each layer's name, type, bottoms, tops and blobs.

The forks gave LayerParameter fields numbers that collide with BVLC's and with each other
(NNMC's inq_convolution_param is 149, its dns_convolution_param 147 = BVLC's swish_param;
FORK_FIELDS.md 5), so such a caffemodel does not parse as a whole with our schema. Copying
its weights needs none of those fields: `weights_only` rewrites the serialized NetParameter
keeping, in every `layer`, only the fields that every vintage numbers alike.
"""
from .blobs import encode_varint

#: LayerParameter name 1, type 2, bottom 3, top 4, blobs 7 (the same in every vintage)
KEPT_LAYER_FIELDS = frozenset((1, 2, 3, 4, 7))
NET_LAYER_FIELD = 100
LEN = 2


def _varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data):
    """(field number, wire type, start of the field, end of its value, value start)."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            value_start = pos
        elif wire == 1:
            value_start, pos = pos, pos + 8
        elif wire == 5:
            value_start, pos = pos, pos + 4
        elif wire == LEN:
            length, value_start = _varint(data, pos)
            pos = value_start + length
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        if pos > len(data):
            raise ValueError("field runs past the end")
        yield number, wire, start, pos, value_start


def weights_only(data):
    """The NetParameter bytes with every `layer` cut down to KEPT_LAYER_FIELDS."""
    out = bytearray()
    for number, wire, start, end, value_start in _fields(data):
        if number != NET_LAYER_FIELD or wire != LEN:
            out += data[start:end]
            continue
        layer = bytearray()
        for n, _, s, e, _ in _fields(data[value_start:end]):
            if n in KEPT_LAYER_FIELDS:
                layer += data[value_start + s:value_start + e]
        out += encode_varint(NET_LAYER_FIELD << 3 | LEN) + encode_varint(len(layer)) + layer
    return bytes(out)
