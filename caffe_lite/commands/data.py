"""`caffe-lite data mnist|fashion-mnist|cifar10`: build the LMDBs and mean file of a data set.

The output goes to data/<name> (run from the project root, where the models' paths start);
with -pad N the MNIST-format images grow to (28 + 2N) x (28 + 2N) and the default folder names
that size, data/<name>-<size>, so a model written for the padded images cannot pick up an
unpadded build (models/cifar10_quick/fashion_mnist reads data/fashion-mnist-32).
"""
from pathlib import Path

from ..cli import Flag, command, parse_flags, usage_line
from ..data import datasets
from ..errors import CaffeError
from ..log import LOG

FLAGS = [
    Flag("from", "", str, "Where the original files are: the folder of the four IDX files "
                          "(mnist: data/mnist; fashion-mnist: "
                          f"{datasets.FASHION_MNIST_SYSTEM_DIR}), or the CIFAR-10 archive."),
    Flag("out", "", str, "Output folder (data/<name>, or data/<name>-<size> with -pad)."),
    Flag("pad", 0, int, "Zero padding added around each MNIST-format image."),
    Flag("backend", "lmdb", str, "The backend {lmdb, leveldb} for storing the result."),
    Flag("md5", True, bool, "Check the input files against the official MD5 sums."),
]
IDX_NAMES = ", ".join(f"{stem}(.gz)" for stem in datasets.MNIST_FILES)


def _mnist_like(name, files, src, values):
    if values["pad"] < 0:
        raise CaffeError(f"-pad must be >= 0, got {values['pad']}")
    out = values["out"] or datasets.default_out(name, values["pad"])
    if values["pad"]:
        side = datasets.IDX_SIDE + 2 * values["pad"]
        LOG.info("Padding the %dx%d images to %dx%d", datasets.IDX_SIDE, datasets.IDX_SIDE,
                 side, side)
    return datasets.build_idx_dataset(name.replace("-", "_"), src, out, files,
                                      pad=values["pad"], backend=values["backend"],
                                      check_md5=values["md5"])


def _source(values, default):
    """-from, or the default folder; a missing one is named with what it should hold."""
    src = Path(values["from"] or default)
    if not src.is_dir():
        raise CaffeError(f"no such directory (-from names the folder of {IDX_NAMES})", src)
    return src


def _mnist(values):
    default = Path("data/mnist")
    if not default.is_dir():
        default = datasets.project_root() / "data" / "mnist"
    return _mnist_like("mnist", datasets.MNIST_FILES, _source(values, default), values)


def _fashion(values):
    if not values["from"] and not Path(datasets.FASHION_MNIST_SYSTEM_DIR).is_dir():
        raise CaffeError(
            f"Fashion-MNIST is not installed: `apt-get install "
            f"{datasets.FASHION_MNIST_PACKAGE}` puts its IDX files in "
            f"{datasets.FASHION_MNIST_SYSTEM_DIR}; or give -from DIR, a folder of {IDX_NAMES}")
    return _mnist_like("fashion-mnist", datasets.FASHION_MNIST_FILES,
                       _source(values, datasets.FASHION_MNIST_SYSTEM_DIR), values)


def _cifar10(values):
    if values["pad"]:
        raise CaffeError("-pad applies to mnist and fashion-mnist only")
    if not values["from"]:
        raise CaffeError("give the CIFAR-10 archive with -from cifar-10-binary.tar.gz "
                         "(or cifar-10-python.tar.gz); no copy can be downloaded here")
    out = values["out"] or datasets.default_out("cifar10")
    return datasets.build_cifar10(values["from"], out, backend=values["backend"],
                                  check_md5=values["md5"])


BUILDERS = {"mnist": _mnist, "fashion-mnist": _fashion, "cifar10": _cifar10}


@command("data", "build train/test LMDBs + mean file: mnist | fashion-mnist | cifar10",
         "|".join(BUILDERS) + " [flags]")
def data_command(argv):
    values, positional = parse_flags(argv, FLAGS)
    if len(positional) != 1 or positional[0] not in BUILDERS:
        got = f"got '{' '.join(positional)}'" if positional else "none given"
        raise CaffeError(f"name one data set: {', '.join(BUILDERS)} ({got}); "
                         + usage_line("data"))
    BUILDERS[positional[0]](values)
    return 0
