"""The text files of ../shared/corpus by the message they parse as, for parametrized tests.

Each distinct content is listed once: many corpus files are byte-identical copies of one
another. The classification parses every file, so it runs once per test session.
"""
import functools
import hashlib
import re
from pathlib import Path

import pytest

from caffe_lite.io.prototxt import detect_kind

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
TEXT_SUFFIXES = (".prototxt", ".solver")

# `type: "Name"` anywhere but in a comment: layer types (and filler types, which never
# collide with a layer type's name)
_TYPE = re.compile(r'\btype\s*:\s*"(\w+)"')
_COMMENT = re.compile(r"#[^\n]*")


@functools.lru_cache(maxsize=None)
def files_by_kind():
    """{'net' | 'solver' | 'deephi_config': [path, ...]}, sorted, one path per content."""
    seen, kinds = set(), {}
    if not CORPUS.is_dir():
        return kinds
    for path in sorted(p for p in CORPUS.rglob("*") if p.suffix in TEXT_SUFFIXES):
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kinds.setdefault(detect_kind(path), []).append(path)
    return kinds


def params(kind, marks=lambda path: ()):
    """pytest params over the corpus files of `kind`; one skipped param without ../shared."""
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CORPUS} is not present"),
                             id="no-corpus")]
    return [pytest.param(p, marks=marks(p), id=str(p.relative_to(CORPUS)))
            for p in files_by_kind().get(kind, [])]


def named_types(path):
    """The type names a prototxt's text gives, without parsing it."""
    text = _COMMENT.sub("", Path(path).read_text(encoding="utf-8", errors="replace"))
    return set(_TYPE.findall(text))
