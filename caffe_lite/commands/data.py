"""`caffe-lite data mnist|fashion-mnist|cifar10`: build the LMDBs and mean file of a data set."""
from pathlib import Path

from ..cli import Flag, command, parse_flags
from ..data import datasets
from ..errors import CaffeError
from ..log import LOG, setup_logging

FLAGS = [
    Flag("from", None, str, "where the original files are"),
    Flag("out", None, str, "output directory (default data/<name>)"),
    Flag("pad", 0, int, "zero padding added around each image"),
    Flag("backend", "lmdb", str, "lmdb or leveldb"),
    Flag("md5", True, bool, "check the input files against the official MD5 sums"),
]


def _mnist_like(name, files, default_src, values):
    src = Path(values["from"] or default_src)
    if not src.is_dir():
        raise CaffeError(f"{src}: no such directory with the {name} IDX files")
    out = values["out"] or f"data/{name}"
    return datasets.build_idx_dataset(name.replace("-", "_"), src, out, files,
                                      pad=values["pad"], backend=values["backend"],
                                      check_md5=values["md5"])


def _mnist(values):
    default = Path("data/mnist")
    if not default.is_dir():
        default = datasets.project_root() / "data" / "mnist"
    return _mnist_like("mnist", datasets.MNIST_FILES, default, values)


def _fashion(values):
    return _mnist_like("fashion-mnist", datasets.FASHION_MNIST_FILES,
                       datasets.FASHION_MNIST_SYSTEM_DIR, values)


def _cifar10(values):
    if not values["from"]:
        raise CaffeError("cifar10: give the archive with -from cifar-10-binary.tar.gz "
                         "(or cifar-10-python.tar.gz); no copy can be downloaded here")
    return datasets.build_cifar10(values["from"], values["out"] or "data/cifar10",
                                  backend=values["backend"], check_md5=values["md5"])


BUILDERS = {"mnist": _mnist, "fashion-mnist": _fashion, "cifar10": _cifar10}


@command("data", "build train/test LMDBs + mean file: mnist | fashion-mnist | cifar10")
def data_command(argv):
    setup_logging()
    values, positional = parse_flags(argv, FLAGS, "data")
    if len(positional) != 1 or positional[0] not in BUILDERS:
        raise CaffeError(f"usage: caffe-lite data {'|'.join(sorted(BUILDERS))} "
                         "[-from PATH] [-out DIR] [-pad N]")
    outputs = BUILDERS[positional[0]](values)
    for path in outputs:
        LOG.info("Wrote %s", path)
    return 0
