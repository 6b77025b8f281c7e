"""The convolution chunk limit: from the last-level cache size, or CAFFE_LITE_CONV_WORKSPACE_MB."""
import subprocess
import sys

import numpy as np
import pytest

from caffe_lite.errors import CaffeError
from caffe_lite.kernels import conv as conv_kernels
from caffe_lite.kernels import workspace_size as ws


@pytest.mark.parametrize("text, expected", [
    ("48K", 48 << 10), ("2048K", 2 << 20), ("491520K", 480 << 20), ("32M", 32 << 20),
    ("1G", 1 << 30), ("12345", 12345), ("", None), ("K", None), ("big", None)])
def test_parse_cache_size(text, expected):
    assert ws.parse_cache_size(text + "\n") == expected


@pytest.mark.parametrize("cache, limit", [
    (None, 4 << 20), (2 << 20, 4 << 20), (32 << 20, 4 << 20), (64 << 20, 8 << 20),
    (128 << 20, 16 << 20), (480 << 20, 16 << 20)])
def test_limit_is_an_eighth_of_the_cache_between_4_and_16_mb(cache, limit):
    assert ws.limit_for_cache(cache) == limit


def test_largest_cache_level_read_from_sysfs(tmp_path, monkeypatch):
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "32768K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    (tmp_path / "uevent").write_text("")
    monkeypatch.setattr(ws, "CACHES", str(tmp_path))
    ws.last_level_cache_bytes.cache_clear()
    try:
        assert ws.last_level_cache_bytes() == 32 << 20
        monkeypatch.setattr(ws, "CACHES", str(tmp_path / "absent"))
        ws.last_level_cache_bytes.cache_clear()
        assert ws.last_level_cache_bytes() is None
    finally:
        ws.last_level_cache_bytes.cache_clear()


def test_environment_sets_the_limit(monkeypatch):
    monkeypatch.setenv(ws.ENV, "1.5")
    assert ws.workspace_limit() == 3 << 19
    monkeypatch.delenv(ws.ENV)
    assert ws.SMALLEST <= ws.workspace_limit() <= ws.LARGEST


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "lots", "1e30"])
def test_bad_environment_value_is_one_clear_error(monkeypatch, bad):
    monkeypatch.setenv(ws.ENV, bad)
    with pytest.raises(CaffeError, match=f"{ws.ENV} must be a size in MiB > 0, got '{bad}'"):
        ws.workspace_limit()


def test_chunks_follow_the_environment(monkeypatch):
    # 10 images of 1 MiB each: 2 MiB chunks give 5 chunks of 2, 64 MiB one chunk
    monkeypatch.setattr(conv_kernels, "WORKSPACE_LIMIT", None)
    monkeypatch.setenv(ws.ENV, "2")
    assert conv_kernels._chunks(0, 10, 1 << 18, np.dtype(np.float32).itemsize) == \
        [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    monkeypatch.setenv(ws.ENV, "64")
    assert conv_kernels._chunks(0, 10, 1 << 18, 4) == [(0, 10)]


def test_cli_reports_a_bad_value_in_one_line(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "x" type: "Input" top: "x" '
                   'input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
                   'convolution_param { num_output: 2 kernel_size: 3 } }\n')
    env = {"CAFFE_LITE_CONV_WORKSPACE_MB": "zero", "PATH": "/usr/bin:/bin",
           "GLOG_minloglevel": "2"}
    run = subprocess.run([sys.executable, "-m", "caffe_lite", "time", "-model", str(net),
                          "-iterations", "1"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 1
    # one line, at the convolution that needed the limit
    assert run.stderr.strip() == (f"caffe-lite time: error: {net}:2: CAFFE_LITE_CONV_WORKSPACE_MB"
                                  " must be a size in MiB > 0, got 'zero'"), run.stderr
