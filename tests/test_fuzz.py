"""The fuzz suite that stays (issue #16): mutated inputs of each kind through the commands, as a
user runs them. The property: exit code 0 or 1, at most one error line, which names the file,
never `internal error`, never a signal, in bounded time. Small example counts here (seconds);
`tools/fuzz.py` runs the same families for long campaigns."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from caffe_lite import cli
from caffe_lite.solvers import get_solver
from caffe_lite.solvers import snapshot as snapshot_mod
from test_solver_features import DUMMY_DATA, write_case

HERE = Path(__file__).resolve().parent
NET_TEXT = (HERE / "data" / "golden" / "lenet" / "net.prototxt").read_text()
SOLVER_TEXT = (HERE.parent / "models" / "lenet" / "lenet_solver.prototxt").read_text()
MODEL = (HERE / "data" / "golden" / "layers_a" / "weights_init.caffemodel").read_bytes()
FUZZ = settings(max_examples=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("restore_glog")


def mutated(data, edits):
    """data with each (position fraction, kind, byte) edit applied: replace, insert, delete,
    or truncate there."""
    data = bytearray(data)
    for where, kind, byte in edits:
        if not data:
            break
        i = min(int(where * len(data)), len(data) - 1)
        if kind == "replace":
            data[i] = byte
        elif kind == "insert":
            data.insert(i, byte)
        elif kind == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


edits = st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["replace", "insert", "delete",
                                                               "truncate"]),
                           st.integers(0, 255)), min_size=1, max_size=6)


def check_one_command(capsys, argv, path):
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("caffe-lite")]
    assert rc in (0, 1), err[-2000:]
    assert all("internal error" not in ln for ln in lines), lines
    if rc == 1:
        assert len(lines) == 1, lines
        assert os.path.basename(str(path)) in lines[0], lines[0]


@FUZZ
@given(edits=edits)
def test_mutated_net_text(tmp_path, capsys, edits):
    src = tmp_path / "net.prototxt"
    src.write_bytes(mutated(NET_TEXT.encode(), edits))
    check_one_command(capsys, ["upgrade_net_proto_text", src, tmp_path / "out.prototxt"], src)


@FUZZ
@given(edits=edits)
def test_mutated_solver_text(tmp_path, capsys, edits):
    src = tmp_path / "solver.prototxt"
    src.write_bytes(mutated(SOLVER_TEXT.encode(), edits))
    check_one_command(capsys, ["upgrade_solver_proto_text", src, tmp_path / "out.prototxt"],
                      src)


@FUZZ
@given(edits=edits)
def test_mutated_caffemodel(tmp_path, capsys, edits):
    src = tmp_path / "w.caffemodel"
    src.write_bytes(mutated(MODEL, edits))
    check_one_command(capsys, ["upgrade_net_proto_binary", src, tmp_path / "out.caffemodel"],
                      src)


@FUZZ
@given(flag=st.sampled_from(["-iterations", "-level", "-phase", "-stage", "-max_memory",
                             "-weights"]),
       value=st.one_of(st.integers(-2 ** 70, 2 ** 70).map(str), st.text(max_size=12),
                       st.sampled_from(["", "-1", "0", "1e9", "TRAIN", "nan", "4G"])))
def test_random_flag_values(tmp_path, capsys, flag, value):
    try:
        count = int(value)  # str.isdigit() is true for '¹', which int() refuses
    except ValueError:
        count = None
    if flag == "-iterations" and count is not None and 3 < count < 2 ** 31:
        value = "3"         # a valid count runs that many passes: keep the test short
    net = tmp_path / "net.prototxt"
    net.write_text('name: "n"\nlayer { name: "d" type: "Input" top: "x" '
                   'input_param { shape { dim: 1 dim: 2 } } }\n')
    rc = cli.main(["time", "-model", str(net), "-iterations", "1", flag, value])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("caffe-lite")]
    assert rc in (0, 1) and all("internal error" not in ln for ln in lines), lines
    assert rc == 0 or len(lines) == 1


@pytest.fixture(scope="module")
def snapshot_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("snap")
    path = write_case(folder, DUMMY_DATA)
    solver = get_solver(path)
    solver.step(2)
    state_file = solver.snapshot()
    side = state_file + snapshot_mod.RNG_SUFFIX
    return path, state_file, side, Path(side).read_bytes()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                                     st.floats(allow_nan=False), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=3)), max_leaves=8)


@FUZZ
@given(key=st.sampled_from(["rng", "train_net", "test_nets", "hooks", "iter"]),
       value=json_values)
def test_damaged_side_file_restores_all_or_refuses(snapshot_case, key, value):
    from caffe_lite.errors import CaffeError
    path, state_file, side, good = snapshot_case
    data = json.loads(good)
    data[key] = value
    Path(side).write_text(json.dumps(data))
    try:
        solver = get_solver(path)
        try:
            solver.restore(state_file)
        except CaffeError as err:
            assert os.path.basename(side) in str(err) and "\n" not in str(err)
    finally:
        Path(side).write_bytes(good)


def test_a_signal_never_ends_a_command(tmp_path):
    """One subprocess over a few damaged inputs: a segfault or SIGBUS would show as a
    negative return code, which the in-process tests above cannot see."""
    bad = tmp_path / "w.caffemodel"
    bad.write_bytes(MODEL[: len(MODEL) // 3])
    proc = subprocess.run([sys.executable, "-m", "caffe_lite", "upgrade_net_proto_binary",
                           str(bad), str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("caffe-lite") == 1
