"""Damaged LMDB databases and records give one error line naming the database (and the record)
instead of SIGBUS, an internal error or a silent half-read (issue #16). Run as a user runs the
commands, in subprocesses: a truncated data.mdb used to kill the process."""
import os
import subprocess
import sys

import lmdb
import pytest

from caffe_lite.proto import caffe_pb2

NET = """name: "n"
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "db" batch_size: 4 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def datum(channels=1, side=28, data=None):
    d = caffe_pb2.Datum(channels=channels, height=side, width=side, label=1)
    d.data = bytes(max(channels, 0) * side * side) if data is None else data
    return d.SerializeToString()


def build(folder, records):
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(b"%08d" % i, value)
    env.close()


def truncate(folder, size):
    os.truncate(folder / "data.mdb", size(os.path.getsize(folder / "data.mdb")))


def overwrite_pages(folder):
    data = bytearray((folder / "data.mdb").read_bytes())
    for offset in range(8192, len(data), 4096):       # every page after the two meta pages
        data[offset:offset + 16] = b"\xaa" * 16
    (folder / "data.mdb").write_bytes(bytes(data))


def key_past_the_end(folder):
    """The first record of the last page (a leaf) claims a 20,000-byte key and an overflow
    page: LMDB reads the page number after the key, past the end of data.mdb but inside its
    mapping (SIGBUS). A fuzz case found it (the flags and key size of a node overwritten)."""
    data = bytearray((folder / "data.mdb").read_bytes())
    page = len(data) - 4096
    assert int.from_bytes(data[page + 10:page + 12], "little") & 0x02, "not a leaf"  # P_LEAF
    node = page + int.from_bytes(data[page + 16:page + 18], "little")
    data[node + 4:node + 6] = (0x01).to_bytes(2, "little")          # mn_flags: F_BIGDATA
    data[node + 6:node + 8] = (20000).to_bytes(2, "little")         # mn_ksize
    (folder / "data.mdb").write_bytes(bytes(data))


GOOD = [datum() for _ in range(64)]
CASES = {   # records, damage to the file, words of the message
    "a record that is not a Datum": (GOOD[:3] + [b"\xff\xff\xff junk"] + GOOD[4:], None,
                                     "record #3 (in key order): not a Datum"),
    "pixels that do not fill the shape": (GOOD[:5] + [datum(data=b"abc")] + GOOD[6:], None,
                                          "record #5 (in key order): datum of shape (1, 28, 28) "
                                          "holds 3 values"),
    "negative channels": ([datum(channels=-1, data=b"")] * 8, None,
                          "datum has channels -1, height 28, width 28: each must be positive"),
    "data.mdb cut to 16 KB": (GOOD, lambda f: truncate(f, lambda n: 16384),
                              "damaged LMDB database: data.mdb has 16384 bytes"),
    "data.mdb cut in half": (GOOD, lambda f: truncate(f, lambda n: n // 2),
                             "damaged LMDB database: data.mdb has"),
    "overwritten pages": (GOOD, overwrite_pages, "damaged LMDB database: "),
    "a key past the end of the file": (
        [datum(side=2)] * 16, key_past_the_end,
        "damaged LMDB database: a read ran past the end of data.mdb (bus error)"),
}


def caffe_lite(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "caffe_lite", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["time", "compute_image_mean"])
def test_damage_is_one_line_naming_the_database(tmp_path, case, command):
    records, damage, words = CASES[case]
    build(tmp_path / "db", records)
    if damage:
        damage(tmp_path / "db")
    (tmp_path / "net.prototxt").write_text(NET)
    argv = (["time", "-model", "net.prototxt", "-iterations", "2"] if command == "time"
            else ["compute_image_mean", "db", "mean.binaryproto"])
    proc = caffe_lite(*argv, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("caffe-lite")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "internal error" not in lines[0] and words in lines[0], lines[0]
    assert "db" in lines[0]
    assert not (tmp_path / "mean.binaryproto").exists()


def test_the_fault_address_names_the_database(tmp_path):
    from caffe_lite.data import bus_error
    maps = tmp_path / "maps"
    maps.write_text(
        "55d0c0000000-55d0c0001000 r--p 00000000 00:1f 12 /usr/bin/python3.11\n"
        "7f0000000000-7f0000a00000 r--s 00000000 00:1f 34 /data/mnist/train_lmdb/data.mdb\n"
        "7f0000a00000-7f0000a01000 rw-p 00000000 00:00 0\n")
    assert bus_error.mapped_database(0x7f0000003000, maps) == "/data/mnist/train_lmdb"
    assert bus_error.mapped_database(0x7f0000a00010, maps) is None
    assert bus_error.mapped_database(0x55d0c0000010, maps) is None


def test_a_library_user_keeps_its_signal_handling(tmp_path):
    """Only a caffe-lite command installs the SIGBUS handler; a script opening an LMDB
    through the library does not get one (a fresh process: a command run in this one may
    have installed it)."""
    build(tmp_path / "db", GOOD[:4])
    code = ("from caffe_lite.data import bus_error, db; "
            f"db.LMDBReader({str(tmp_path / 'db')!r}).next_value(); "
            "print(bus_error._installed)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.split() == ["False"], run.stderr


def test_a_label_out_of_range_names_the_net_line_and_the_database(tmp_path):
    """A damaged record whose label falls outside the net's classes: the loss layer's error
    at its prototxt line, naming the database the label came from (a fuzz case: it named
    the layer only)."""
    labels = [1] * 8
    labels[5] = 50
    records = []
    for label in labels:
        d = caffe_pb2.Datum(channels=1, height=28, width=28, label=label, data=bytes(784))
        records.append(d.SerializeToString())
    build(tmp_path / "db", records)
    (tmp_path / "net.prototxt").write_text(NET)
    proc = caffe_lite("time", "-model", "net.prototxt", "-iterations", "3", cwd=tmp_path)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("caffe-lite")]
    assert lines == ["caffe-lite time: error: net.prototxt:6: layer 'loss' (SoftmaxWithLoss): "
                     "label values must be in [0, 2) (or the ignore_label); got 50.0 ('label' "
                     "comes from layer 'data' reading db)"]
