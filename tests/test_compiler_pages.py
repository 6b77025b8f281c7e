"""compiler_pages: LLVM's code leaves the process's resident memory once the kernels a pass
needs have loaded, only the file's own pages are touched, and LLVM still works afterwards
(issue #14, the LeNet main job's peak RSS)."""
import subprocess
import sys
import textwrap

import pytest
from google.protobuf import text_format

from caffe_lite import compiler_pages
from caffe_lite.net import Net
from caffe_lite.proto import caffe_pb2

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, madvise")

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fd:00 42   /opt/lib/libllvmlite.so
Rss:                 400 kB
Anonymous:             0 kB
7f0000100000-7f0000900000 r-xp 00100000 fd:00 42   /opt/lib/libllvmlite.so
Rss:                8000 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r--p 00900000 fd:00 42   /opt/lib/libllvmlite.so
Rss:                1024 kB
Anonymous:          1024 kB
7f0000a00000-7f0000a10000 rw-p 00a00000 fd:00 42   /opt/lib/libllvmlite.so
Rss:                  64 kB
Anonymous:             0 kB
7f0000a10000-7f0000a20000 rw-p 00000000 00:00 0
Rss:                  64 kB
Anonymous:            64 kB
7f0000b00000-7f0000c00000 r-xp 00000000 fd:00 43   /usr/lib/libc.so.6
Rss:                1024 kB
Anonymous:             0 kB
"""


def test_only_unwritten_read_only_mappings_of_the_library_are_chosen(tmp_path):
    smaps = tmp_path / "smaps"
    smaps.write_text(SMAPS)
    found = compiler_pages.clean_mappings("libllvmlite", str(smaps))
    # the relocated part (anonymous pages) and the writable one are left alone
    assert found == [(0x7f0000000000, 0x7f0000100000), (0x7f0000100000, 0x7f0000900000)]
    assert compiler_pages.clean_mappings("libnothing", str(smaps)) == []
    assert compiler_pages.clean_mappings("x", str(tmp_path / "missing")) == []


RELEASE_THEN_COMPILE = textwrap.dedent("""
    import numba
    from caffe_lite import compiler_pages

    def resident(ranges):
        total, inside = 0, False
        for line in open("/proc/self/smaps"):
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                start, stop = (int(x, 16) for x in fields[0].split("-"))
                inside = (start, stop) in ranges
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) << 10
        return total

    @numba.njit(cache=False)
    def add(x):
        return x + 1

    assert add(1) == 2
    ranges = set(compiler_pages.clean_mappings(compiler_pages.LIBRARY))
    before = resident(ranges)
    advised = compiler_pages.release()
    after = resident(ranges)

    @numba.njit(cache=False)
    def twice(x):
        return 2 * x + 1

    assert twice(3) == 7            # LLVM maps its pages again and compiles
    print(before, advised, after, resident(ranges))
""")


@linux_only
def test_llvm_pages_leave_and_come_back():
    out = subprocess.run([sys.executable, "-c", RELEASE_THEN_COMPILE], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before, advised, after, again = map(int, out.stdout.split())
    assert before > 8 << 20          # compiling touched megabytes of LLVM's code
    assert advised >= before
    assert after < before // 10      # a few pages may come back (another thread's call)
    assert again > after             # the second compile touched them again


NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_a_net_releases_after_each_layer_of_its_first_passes_only(monkeypatch):
    calls = []
    monkeypatch.setattr(compiler_pages, "release", lambda: calls.append(1))
    net = Net(param=text_format.Parse(NET, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    net.blobs["label"].data[...] = [0, 2]
    net.forward_prefilled()
    assert len(calls) == 4                        # each layer of the first forward
    net.forward_prefilled()
    assert len(calls) == 4
    net.backward_all()
    assert len(calls) == 7                        # conv, ip, loss need backward; Input not
    net.forward_prefilled()
    net.backward_all()
    assert len(calls) == 7
