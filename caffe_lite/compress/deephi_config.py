"""DeePhi / Xilinx `deephi_compress` prune configs (#13): what each subcommand needs from
one, checked up front, each problem one line naming the file and the field's line.

The message is the schema's DeephiPruneConfig (FORK_FIELDS.md section 6): workspace, gpu,
test_iter, acc_name, model, weights, solver, rate, pruner { method: REGULAR }. Paths are
used as written: relative ones from the working folder, as the tutorial runs the tool
from its root. `rate` is the reduction of operations to reach against the full model (its
prototxt): 0.1 removes 10%; the tutorial's config0 has rate 0.0, a fine-tune of the
unpruned model, so 0 is accepted and 1 or more, or a negative rate, is not. An unknown
`method` is refused when the file is parsed (REGULAR is the only value of the enum).
"""
import os
from dataclasses import dataclass

from ..errors import CaffeError
from ..io.input_file import file_problem
from ..io.prototxt import read_deephi_config
from ..solvers.validate import FieldLines

#: The fields each subcommand reads.
NEEDS = {
    "ana": ("workspace", "test_iter", "acc_name", "model", "weights"),
    "compress": ("workspace", "test_iter", "acc_name", "model", "weights", "rate"),
    "finetune": ("workspace", "model", "solver", "rate"),
}
FILE_FIELDS = ("model", "weights", "solver")


@dataclass
class DeephiConfig:
    path: str
    message: object
    lines: FieldLines

    def __getattr__(self, name):
        return getattr(self.__dict__["message"], name)

    def error(self, field, text):
        """A CaffeError at the line of `field` (top level, or `pruner`'s line)."""
        return CaffeError(f"{field}: {text}", self.path, self.lines.line(field))

    @property
    def rate_folder(self):
        """<workspace>/regular_rate_<rate>: 0.1 -> regular_rate_0.1, 0.0 -> regular_rate_0."""
        return os.path.join(self.workspace, f"regular_rate_{self.rate:g}")


def load_config(path, subcommand):
    """The checked DeephiConfig of `path` for `subcommand` (NEEDS)."""
    message = read_deephi_config(path)
    config = DeephiConfig(os.fspath(path), message, FieldLines(path))
    for name in NEEDS[subcommand]:
        if not message.HasField(name):
            raise CaffeError(f"missing field '{name}': `{subcommand}` needs "
                             f"{', '.join(NEEDS[subcommand])}", config.path)
    if message.HasField("rate") and not 0 <= message.rate < 1:
        raise config.error("rate", f"{message.rate:g} is outside [0, 1) (the reduction of "
                                   "operations to reach: 0.1 removes 10%)")
    if message.HasField("test_iter") and message.test_iter < 1:
        raise config.error("test_iter", f"must be at least 1, got {message.test_iter}")
    for name in ("acc_name", "workspace"):
        if message.HasField(name) and not getattr(message, name):
            raise config.error(name, "is empty")
    for name in FILE_FIELDS:
        if name in NEEDS[subcommand]:
            problem = file_problem(getattr(message, name))
            if problem:
                raise config.error(name, f"cannot open '{getattr(message, name)}' ({problem})")
    check_workspace(config)
    return config


def check_workspace(config):
    """Create the workspace when it is missing; refuse one that cannot be written."""
    folder = config.workspace
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise config.error("workspace", f"cannot create '{folder}' "
                                        f"({err.strerror or err})") from None
    if not os.path.isdir(folder):
        raise config.error("workspace", f"'{folder}' is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise config.error("workspace", f"cannot write into '{folder}'")
