"""`caffe-lite COMMAND [flags]`: Caffe's tools/caffe.cpp command table, in Python.

Each module in caffe_lite/commands registers its commands with @command; flags follow
gflags as Caffe uses them: `-name value`, `-name=value`, `--name value`, and bare `-flag` for
booleans. Any CaffeError becomes one line on stderr and exit code 1.
"""
import importlib
import os
import pkgutil
import sys

from .errors import CaffeError

COMMANDS = {}


def command(name, help=""):
    def wrap(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return wrap


class Flag:
    def __init__(self, name, default=None, type=str, help=""):
        self.name, self.default, self.type, self.help = name, default, type, help


def parse_flags(argv, flags, command_name=""):
    """Parse gflags-style `argv` against `flags` (a list of Flag). Returns (values, positional)."""
    spec = {f.name: f for f in flags}
    values = {f.name: f.default for f in flags}
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name = arg.lstrip("-")
            value = None
            if "=" in name:
                name, value = name.split("=", 1)
            if name not in spec and name.startswith("no") and name[2:] in spec \
                    and spec[name[2:]].type is bool and value is None:
                values[name[2:]] = False
                i += 1
                continue
            if name not in spec:
                known = " ".join("-" + f for f in sorted(spec))
                raise CaffeError(f"{command_name}: unknown flag -{name} (flags: {known})")
            flag = spec[name]
            if value is None:
                if flag.type is bool:
                    value = "true"
                else:
                    if i + 1 >= len(argv):
                        raise CaffeError(f"{command_name}: flag -{name} needs a value")
                    i += 1
                    value = argv[i]
            values[name] = _convert(flag, value, command_name)
        else:
            positional.append(arg)
        i += 1
    return values, positional


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _convert(flag, value, command_name):
    if flag.type is bool:
        low = value.lower()
        if low in ("true", "1", "yes", "t", "y"):
            return True
        if low in ("false", "0", "no", "f", "n"):
            return False
        raise CaffeError(f"{command_name}: flag -{flag.name} takes true or false, got '{value}'")
    try:
        return flag.type(value)
    except ValueError:
        raise CaffeError(f"{command_name}: flag -{flag.name} takes a "
                         f"{flag.type.__name__}, got '{value}'") from None


def _load_commands():
    from . import commands
    for info in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{info.name}")


def usage():
    lines = ["usage: caffe-lite <command> <args>", "", "commands:"]
    for name in sorted(COMMANDS):
        lines.append(f"  {name:<28} {COMMANDS[name][1]}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    _load_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 1
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"caffe-lite: unknown command '{name}'\n{usage()}", file=sys.stderr)
        return 1
    try:
        result = COMMANDS[name][0](rest)
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
