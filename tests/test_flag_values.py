"""Flag values are checked where they enter (issue #16): an int32 flag that does not fit is a
bad value (it used to overflow into an internal error), and train's -iterations must be >= 1,
as test's and time's (0 and -5 used to exit 0 having done nothing)."""
import pytest

from caffe_lite import cli

NET = ('name: "n"\nlayer { name: "d" type: "Input" top: "x" '
       'input_param { shape { dim: 1 dim: 2 } } }\n')
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n'


pytestmark = pytest.mark.usefixtures("restore_glog")


def error_of(capsys, *argv):
    rc = cli.main(list(map(str, argv)))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("caffe-lite")]
    assert rc == 1 and len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("value", ["-5", "0"])
def test_train_iterations_below_one(capsys, tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "s.prototxt").write_text(SOLVER)
    assert error_of(capsys, "train", "-solver", "s.prototxt", "-iterations", value) == (
        f"caffe-lite train: error: -iterations must be >= 1, got {value}")


@pytest.mark.parametrize("command, value", [("train", "99999999999999999999999"),
                                            ("time", "2147483648"), ("test", "-2147483649")])
def test_int32_flags_out_of_range(capsys, tmp_path, command, value):
    line = error_of(capsys, command, "-iterations", value)
    assert line == f"caffe-lite {command}: error: flag -iterations takes an int32, got '{value}'"


def test_int32_bounds_themselves_parse():
    flag = cli.Flag("n", 0, int)
    assert cli._convert(flag, "2147483647") == 2 ** 31 - 1
    assert cli._convert(flag, "-2147483648") == -2 ** 31
