"""kernels/jit.py: a cached kernel is rebuilt when any source it may have inlined changes,
not only its own file (Numba's own test)."""
import os
import subprocess
import sys
import textwrap

from caffe_lite.kernels import jit

USER = """
import sys
from pathlib import Path
import caffe_lite.kernels.jit as jit
jit.SOURCES = Path(sys.argv[1])
sys.path.insert(0, sys.argv[1])
from user import total
print(total(2))
"""


def _write(path, text):
    path.write_text(textwrap.dedent(text))


def test_a_change_to_an_inlined_helper_rebuilds_the_kernel(tmp_path):
    sources, cache = tmp_path / "src", tmp_path / "cache"
    sources.mkdir()
    _write(sources / "helper.py", """
        from numba import njit
        @njit(inline="always")
        def step(i):
            return i
        """)
    _write(sources / "user.py", """
        from caffe_lite.kernels.jit import kernel
        from helper import step
        @kernel
        def total(n):
            return sum([step(i) for i in range(n + 1)])
        """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))

    def run():
        out = subprocess.run([sys.executable, "-c", USER, str(sources)], env=env, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()
    assert run() == "3"
    assert list(cache.rglob("*.nbi"))                       # cached
    _write(sources / "helper.py", """
        from numba import njit
        @njit(inline="always")
        def step(i):
            return 10 * i
        """)
    assert run() == "30"                                    # user.py itself unchanged


def test_the_stamp_follows_every_source(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = jit.sources_stamp(tmp_path)
    jit._stamp_of.cache_clear()
    (tmp_path / "b.py").write_text("y = 2\n")
    assert jit.sources_stamp(tmp_path) != before
    jit._stamp_of.cache_clear()
    assert jit.sources_stamp() == jit.sources_stamp(jit.SOURCES)
