"""`caffe-lite COMMAND -help`: the usage line and one gflags line per flag, on stdout, exit 0;
`caffe-lite -help` lists the commands."""
import re

import pytest

from caffe_lite import cli
from caffe_lite.cli import Flag
from caffe_lite.commands import (bench, compress, compute_image_mean, convert_imageset, data,
                                 optimize, plot, stat, test, threshold, time, train)

cli._load_commands()
FLAGS_OF = {"train": train.FLAGS, "test": test.FLAGS, "time": time.FLAGS, "data": data.FLAGS,
            "plot": plot.FLAGS, "convert_imageset": convert_imageset.FLAGS,
            "compute_image_mean": compute_image_mean.FLAGS,
            "upgrade_net_proto_text": [], "upgrade_net_proto_binary": [],
            "upgrade_solver_proto_text": [], "threshold": threshold.FLAGS,
            "optimize": optimize.FLAGS, "stat": stat.FLAGS, "bench": bench.FLAGS,
            "compress": compress.FLAGS, "deephi_compress": compress.FLAGS}
STRICT = ("-strict (Turn warnings about fork fields that caffe-lite does not implement yet "
          "into errors.) type: bool default: false")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_command_is_covered():
    assert sorted(FLAGS_OF) == sorted(cli.COMMANDS)


def test_module_table_names_the_module_that_registers_each_command():
    from caffe_lite import commands
    registered = {name: command.fn.__module__.rsplit(".", 1)[-1]
                  for name, command in cli.COMMANDS.items()}
    assert commands.MODULE_OF == registered


def test_a_command_imports_its_own_module_only(tmp_path):
    """`caffe-lite upgrade_net_proto_text` must not pay for Numba's start-up."""
    import subprocess
    import sys
    src = tmp_path / "net.prototxt"
    src.write_text('name: "n"\nlayer { name: "d" type: "Input" top: "d" }\n')
    code = ("import sys; from caffe_lite import cli; "
            f"rc = cli.main(['upgrade_net_proto_text', {str(src)!r}, {str(tmp_path / 'o')!r}]); "
            "print(rc, 'numba' in sys.modules, 'caffe_lite.commands.train' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.split() == ["0", "False", "False"], run.stderr


@pytest.mark.parametrize("spelling", ["-help", "--help", "-h", "--h", "-helpfull"])
def test_train_help(capsys, spelling):
    rc, out, err = run(capsys, "train", spelling)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "caffe-lite train: train or finetune a model"
    assert lines[1] == "usage: caffe-lite train -solver SOLVER [flags]"
    assert ('  -solver (The solver definition protocol buffer text file.) type: string '
            'default: ""') in lines
    assert '  -sigint_effect (Action on SIGINT: snapshot, stop or none.) type: string ' \
           'default: "stop"' in lines
    assert "  -level (Optional; network level.) type: int32 default: 0" in lines
    assert "  " + STRICT in lines


@pytest.mark.parametrize("name", sorted(FLAGS_OF))
def test_every_command_describes_each_flag(capsys, name):
    rc, out, err = run(capsys, name, "-help")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"caffe-lite {name}: ") and len(lines[0]) > len(name) + 14
    assert lines[1].startswith(f"usage: caffe-lite {name} ")
    described = [ln for ln in lines[2:] if ln.startswith("  -")]
    assert [ln.split()[0] for ln in described] == ["-" + f.name for f in FLAGS_OF[name]]
    for line in described:
        assert re.fullmatch(r"  -\w+ \(.+\) type: (bool|int32|double|string) default: .+", line)


def test_help_command_prints_the_same(capsys):
    assert run(capsys, "help", "time") == run(capsys, "time", "--help")


@pytest.mark.parametrize("name", ["test", "time"])
def test_strict_flag_is_offered(capsys, name):
    assert "  " + STRICT in run(capsys, name, "-help")[1].splitlines()


def test_help_wins_over_other_flags(capsys):
    rc, out, _ = run(capsys, "data", "mnist", "-pad", "2", "-help")
    assert rc == 0 and out.startswith("caffe-lite data: ")


@pytest.mark.parametrize("argv", [["-help"], ["--help"], ["-h"], ["help"]])
def test_top_level_help_lists_the_commands(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 0 and err == ""
    listed = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  ")]
    assert listed == sorted(cli.COMMANDS)
    assert "`caffe-lite <command> -help`" in out


def test_no_command_is_usage_on_stderr(capsys):
    rc, out, err = run(capsys)
    assert rc == 1 and out == "" and "usage: caffe-lite <command> <args>" in err


def test_help_of_unknown_command(capsys):
    rc, out, err = run(capsys, "help", "trian")
    assert rc == 1 and out == "" and err.startswith("caffe-lite: unknown command 'trian'\n")


def test_version(capsys):
    from caffe_lite import __version__
    assert run(capsys, "--version") == (0, f"caffe-lite version {__version__}\n", "")


@pytest.mark.parametrize("flag, line", [
    (Flag("gpu", "", str, "Devices."), '-gpu (Devices.) type: string default: ""'),
    (Flag("md5", True, bool, "Check."), "-md5 (Check.) type: bool default: true"),
    (Flag("iterations", 50, int, "Count."), "-iterations (Count.) type: int32 default: 50"),
    (Flag("rate", 0.5, float, "Rate."), "-rate (Rate.) type: double default: 0.5"),
    (Flag("max", None, int, "Cap."), "-max (Cap.) type: int32 default: none"),
])
def test_flag_line_has_gflags_shape(flag, line):
    assert flag.describe() == line
