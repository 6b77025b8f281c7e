"""Generated protobuf schema (BVLC Caffe + fork fields).

`caffe_pb2` is generated from proto/caffe.proto by tools/gen_proto.py; never
edit it by hand.  `vintages` maps fork field numbers that differ from ours to
the fork vintage that used them (for the binary loaders' error messages).
"""
from caffe_lite.proto import caffe_pb2

__all__ = ["caffe_pb2"]
