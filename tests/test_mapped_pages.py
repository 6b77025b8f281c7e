"""data.mapped_pages: an LMDB reader does not keep the pages it has read resident, so a long
run's RSS does not grow with the database it reads (issue #14, LeNet main job memory)."""
import os
import sys

import lmdb
import pytest

from caffe_lite.data import db, mapped_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's madvise")

RECORDS, RECORD_BYTES = 1200, 10000        # a 12 MB database


def resident_bytes(data_file):
    """Resident bytes of this process's mappings of data_file (/proc/self/smaps)."""
    target, total, inside = os.path.realpath(data_file), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) == 6 and fields[5] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "db"
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(RECORDS):
            txn.put(b"%08d" % i, os.urandom(RECORD_BYTES))
    env.close()
    return path


def read_all(path, release_bytes, monkeypatch):
    monkeypatch.setattr(db.LMDBReader, "RELEASE_BYTES", release_bytes)
    reader = db.LMDBReader(path)
    peak = 0
    for _ in range(RECORDS):
        assert len(reader.next_value()) == RECORD_BYTES
        peak = max(peak, resident_bytes(path / "data.mdb"))
    reader.close()
    return peak


def test_pages_read_leave_resident_memory(database, monkeypatch):
    whole = RECORDS * RECORD_BYTES
    kept = read_all(database, 1 << 40, monkeypatch)          # never released
    assert kept >= 0.9 * whole
    mapped_pages.release(database / "data.mdb")
    bounded = read_all(database, 1 << 20, monkeypatch)       # released every 1 MB
    # 1 MB read since the last release, plus the pages the kernel maps around each fault
    # (fault-around, 64 KB) and LMDB's branch and leaf pages
    assert bounded <= 4 << 20 < whole / 2


def test_release_finds_the_mapping(database):
    reader = db.LMDBReader(database)
    reader.next_value()
    assert mapped_pages.mappings(database / "data.mdb")
    assert mapped_pages.release(database / "data.mdb") > 0
    assert resident_bytes(database / "data.mdb") == 0
    assert len(reader.next_value()) == RECORD_BYTES         # pages come back on reading
    assert mapped_pages.release(database / "nothing.mdb") == 0
