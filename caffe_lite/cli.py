"""`caffe-lite COMMAND [flags]`: Caffe's tools/caffe.cpp command table, in Python.

Each module in caffe_lite/commands registers its commands with @command; flags follow
gflags as Caffe uses them: `-name value`, `-name=value`, `--name value`, and bare `-flag` for
booleans. `caffe-lite COMMAND -help` (or --help, -h, `caffe-lite help COMMAND`) prints the
command's usage and flags, as gflags does. main() configures the glog logging for every
command (caffe_lite.log); any CaffeError becomes one line on stderr,
`caffe-lite COMMAND: error: MESSAGE`, and exit code 1, so messages raised inside a command
do not name the command again.
"""
import importlib
import os
import pkgutil
import sys
from collections import namedtuple

from .errors import CaffeError
from .threads import configure_command_process

# usage: the arguments after `caffe-lite NAME`, as in `usage: caffe-lite train -solver S`
Command = namedtuple("Command", "fn help usage")
COMMANDS = {}
HELP_FLAGS = ("help", "h", "helpfull", "helpshort")
running_command = None      # the command this process runs, for errors raised outside it
# gflags' names for the types of its flags
_TYPE_NAMES = {bool: "bool", int: "int32", float: "double", str: "string"}


def command(name, help="", usage="[flags]"):
    def wrap(fn):
        COMMANDS[name] = Command(fn, help, usage)
        return fn
    return wrap


class Flag:
    def __init__(self, name, default=None, type=str, help=""):
        self.name, self.default, self.type, self.help = name, default, type, help

    def describe(self):
        """gflags' line: `-name (meaning) type: string default: ""`."""
        if self.default is None:
            default = "none"
        elif self.type is bool:
            default = "true" if self.default else "false"
        elif self.type is str:
            default = f'"{self.default}"'
        else:
            default = str(self.default)
        return f"-{self.name} ({self.help}) type: {_TYPE_NAMES[self.type]} default: {default}"


class HelpRequested(Exception):
    """-help among a command's flags: main() prints the command's help instead of running it."""

    def __init__(self, flags):
        super().__init__("help")
        self.flags = flags


def parse_flags(argv, flags):
    """Parse gflags-style `argv` against `flags` (a list of Flag). Returns (values, positional)."""
    spec = {f.name: f for f in flags}
    values = {f.name: f.default for f in flags}
    positional = Arguments()
    bare_bool = None         # the boolean flag just given without a value, if any
    i = 0
    while i < len(argv):
        arg = argv[i]
        after_bool, bare_bool = bare_bool, None
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name = arg.lstrip("-")
            value = None
            if "=" in name:
                name, value = name.split("=", 1)
            if name in HELP_FLAGS and name not in spec:
                raise HelpRequested(flags)
            if name not in spec and name.startswith("no") and name[2:] in spec \
                    and spec[name[2:]].type is bool and value is None:
                values[name[2:]] = False
                i += 1
                continue
            if name not in spec:
                known = " ".join("-" + f for f in sorted(spec)) or "none"
                raise CaffeError(f"unknown flag -{name} (flags: {known}; -help explains them)")
            flag = spec[name]
            if value is None:
                if flag.type is bool:
                    value = "true"
                    bare_bool = name
                else:
                    if i + 1 >= len(argv):
                        raise CaffeError(f"flag -{name} needs a value")
                    i += 1
                    value = argv[i]
            values[name] = _convert(flag, value)
        else:
            if after_bool:
                positional.after_bool_flag[len(positional)] = after_bool
            positional.append(arg)
        i += 1
    return values, positional


class Arguments(list):
    """The positional arguments parse_flags found; after_bool_flag maps the index of one that
    came right after a boolean flag without a value (gflags never gives it to the flag:
    `-strict false` is -strict plus an argument) to that flag's name."""

    def __init__(self):
        super().__init__()
        self.after_bool_flag = {}


def unexpected_argument(positional, index=0):
    """The CaffeError for the surplus argument positional[index]."""
    arg = positional[index]
    flag = getattr(positional, "after_bool_flag", {}).get(index)
    if flag:
        return CaffeError(f"unexpected argument '{arg}' after -{flag} (a boolean flag takes "
                          f"a value only as -{flag}=VALUE)")
    return CaffeError(f"unexpected argument '{arg}'")


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _convert(flag, value):
    if flag.type is bool:
        low = value.lower()
        if low in ("true", "1", "yes", "t", "y"):
            return True
        if low in ("false", "0", "no", "f", "n"):
            return False
        raise CaffeError(f"flag -{flag.name} takes true or false, got '{value}'")
    try:
        converted = flag.type(value)
        # gflags' int32 flags: a value that does not fit is a bad value, not an overflow later
        if flag.type is int and not -2 ** 31 <= converted < 2 ** 31:
            raise ValueError(value)
        return converted
    except ValueError:
        kind = _TYPE_NAMES[flag.type]
        article = "an" if kind[0] in "aeiou" else "a"
        raise CaffeError(f"flag -{flag.name} takes {article} {kind}, got '{value}'") from None


def usage_line(name):
    """`usage: caffe-lite NAME ARGS` of a registered command."""
    return f"usage: caffe-lite {name} {COMMANDS[name].usage}"


def command_help(name, flags):
    """What `caffe-lite NAME -help` prints: meaning, usage, then one gflags line per flag."""
    lines = [f"caffe-lite {name}: {COMMANDS[name].help}", usage_line(name)]
    if flags:
        lines.append("")
        lines.extend("  " + flag.describe() for flag in flags)
    return "\n".join(lines)


def _load_commands():
    from . import commands
    for info in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{info.name}")


def _load_command(name):
    """Register command `name` by importing its module alone; False for an unknown name."""
    if name in COMMANDS:
        return True
    from . import commands
    module = commands.MODULE_OF.get(name)
    if module is None:
        return False
    importlib.import_module(f"{commands.__name__}.{module}")
    return name in COMMANDS


def usage():
    lines = ["caffe-lite: command line brew", "usage: caffe-lite <command> <args>", "",
             "commands:"]
    for name in sorted(COMMANDS):
        lines.append(f"  {name:<28} {COMMANDS[name].help}")
    lines += ["", "`caffe-lite <command> -help` lists a command's flags."]
    return "\n".join(lines)


def _is_help(arg):
    return arg.startswith("-") and arg.lstrip("-") in HELP_FLAGS


def main(argv=None):
    configure_command_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        _load_commands()
        print(usage(), file=sys.stderr)
        return 1
    if argv[0] in ("-version", "--version"):
        from . import __version__
        print(f"caffe-lite version {__version__}")
        return 0
    if argv[0] == "help" or _is_help(argv[0]):
        if len(argv) > 1 and argv[0] == "help":
            return _help_of(argv[1])
        _load_commands()
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if not _load_command(name):
        return _unknown(name)
    return _run(name, rest)


def _unknown(name):
    _load_commands()
    print(f"caffe-lite: unknown command '{name}'\n{usage()}", file=sys.stderr)
    return 1


def _help_of(name):
    if not _load_command(name):
        return _unknown(name)
    return _run(name, ["-help"])


def _run(name, argv):
    global running_command
    from .log import configure_logging, restore_logging
    try:
        saved = configure_logging()
    except CaffeError as err:
        print(f"caffe-lite {name}: error: {err}", file=sys.stderr)
        return 1
    outer, running_command = running_command, name
    try:
        return _call(name, argv)
    finally:
        running_command = outer
        restore_logging(saved)


def _call(name, argv):
    try:
        result = COMMANDS[name].fn(argv)
    except HelpRequested as request:
        print(command_help(name, request.flags))
        return 0
    except CaffeError as err:
        print(f"caffe-lite {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"caffe-lite {name}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as err:
        print(f"caffe-lite {name}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("CAFFE_LITE_TRACEBACK"):
            raise
        detail = str(err).replace("\n", " ")
        print(f"caffe-lite {name}: internal error: {type(err).__name__}: {detail} "
              "(set CAFFE_LITE_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
