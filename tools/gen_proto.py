"""Regenerate caffe_lite/proto/caffe_pb2.py from proto/caffe.proto.

    python3 tools/gen_proto.py            # rewrite the committed module
    python3 tools/gen_proto.py --check    # exit 1 if the committed module is stale
    python3 tools/gen_proto.py --out DIR  # write caffe_pb2.py into DIR instead

Uses grpc_tools.protoc (python_out only).  protoc's output depends only on the
.proto text and the protoc version, so the result is deterministic; the
staleness test in tests/test_schema.py relies on that.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "proto"
PROTO_FILE = "caffe.proto"
TARGET = REPO / "caffe_lite" / "proto" / "caffe_pb2.py"


def generate(out_dir: Path) -> Path:
    """Run protoc on proto/caffe.proto; return the path of the new caffe_pb2.py."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("gen_proto: grpcio-tools is required "
                         "(pip install grpcio-tools)") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    # Relative -I and file name keep absolute paths out of the descriptor.
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
            str(PROTO_DIR / PROTO_FILE)]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"gen_proto: protoc failed on {PROTO_DIR / PROTO_FILE} "
                         f"(exit {status})")
    return out_dir / "caffe_pb2.py"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed module instead of writing")
    ap.add_argument("--out", type=Path, help="write caffe_pb2.py into this folder")
    ns = ap.parse_args(argv)

    if ns.out is not None:
        print(generate(ns.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp)).read_bytes()
    if ns.check:
        if not TARGET.exists() or TARGET.read_bytes() != fresh:
            print(f"{TARGET.relative_to(REPO)} is stale: run python3 tools/gen_proto.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(fresh)
    print(f"wrote {TARGET.relative_to(REPO)} ({len(fresh)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
