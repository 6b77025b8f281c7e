"""Parse a training log the way Caffe's tools/extra/parse_log.py does (same regexes, same rows).

    train_rows, test_rows = parse_log("train.log")

Each row is an OrderedDict: NumIters, Seconds (since the "Solving" line), LearningRate, then
one column per net output ("loss", "accuracy", ...). A row is complete when it has as many
columns as the first one; the LearningRate of the first row (logged before any "lr =" line)
is copied from the second. save_csv_files writes `<log>.train` / `<log>.test` as parse_log.py.
Beyond parse_log.py, the glog stamp is found anywhere in a line, so a log whose lines carry a
prefix of their own (`ts`, a CI runner's timestamp) gives the same rows as the plain log.

parse_sparsity reads the blocks that `display_sparsity` writes (compress/jacinto_sparsity.py):
    Iteration 1000, sparsity (fraction of zero weights):
        Sparsity #0: conv1 = 0.25 (108/432)
        Total sparsity = 0.5 (9000/18000)
one row per block: NumIters, one column per weight blob, then "total".
"""
import csv
import datetime
import os
import re
from collections import OrderedDict

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
REGEX_SPARSITY_BLOCK = re.compile(r"Iteration (\d+), sparsity")
REGEX_SPARSITY = re.compile(r"Sparsity #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TOTAL_SPARSITY = re.compile(r"Total sparsity = ([\.\deE+-]+)")


# glog's `I1123 00:00:00.000000` prefix, wherever it is: a shell loop, `ts` or a CI runner
# may put a timestamp of its own in front of it.
GLOG_STAMP = re.compile(r"[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)")


def extract_datetime_from_line(line, year):
    """The line's glog stamp as a datetime in `year`; ValueError if it has none."""
    m = GLOG_STAMP.search(line)
    if m is None:
        raise ValueError(f"no glog prefix in {line!r}")
    month, day, hour, minute, second, micro = (int(g) for g in m.groups())
    return datetime.datetime(year, month, day, hour, minute, second, micro)


def parse_log(path_or_lines, year=None):
    """(train_rows, test_rows) from a log file path or an iterable of lines."""
    if isinstance(path_or_lines, (str, os.PathLike)):
        if year is None:
            year = datetime.datetime.fromtimestamp(os.path.getctime(path_or_lines)).year
        with open(path_or_lines, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    else:
        lines = list(path_or_lines)
    year = year or datetime.datetime.now().year
    it = iter(lines)
    start = _solving_time(it, year)
    month = start.month if start else None
    iteration = -1
    learning_rate = float("nan")
    train_rows, test_rows = [], []
    train_row = test_row = None
    for line in it:
        m = REGEX_ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        try:
            time = extract_datetime_from_line(line, year)
        except ValueError:
            continue  # a line without a glog prefix, as parse_log.py skips it
        # The log ran past new year. parse_log.py compares with the start's month, and so
        # adds a year on every line after it; the previous line's month counts it once.
        if time.month < month:
            year += 1
            time = extract_datetime_from_line(line, year)
        month = time.month
        seconds = (time - start).total_seconds()
        m = REGEX_LEARNING_RATE.search(line)
        if m:
            learning_rate = float(m.group(1))
        train_rows, train_row = _parse_output(REGEX_TRAIN_OUTPUT, train_row, train_rows, line,
                                              iteration, seconds, learning_rate)
        test_rows, test_row = _parse_output(REGEX_TEST_OUTPUT, test_row, test_rows, line,
                                            iteration, seconds, learning_rate)
    _fix_initial_nan_learning_rate(train_rows)
    _fix_initial_nan_learning_rate(test_rows)
    return train_rows, test_rows


def parse_sparsity(path_or_lines):
    """The display_sparsity rows of a log file path or an iterable of lines."""
    if isinstance(path_or_lines, (str, os.PathLike)):
        with open(path_or_lines, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    else:
        lines = list(path_or_lines)
    rows, row = [], None
    for line in lines:
        m = REGEX_SPARSITY_BLOCK.search(line)
        if m:
            row = OrderedDict([("NumIters", float(m.group(1)))])
            continue
        if row is None:
            continue
        m = REGEX_SPARSITY.search(line)
        if m:
            row[m.group(2)] = float(m.group(3))
            continue
        m = REGEX_TOTAL_SPARSITY.search(line)
        if m:
            row["total"] = float(m.group(1))
            rows.append(row)
            row = None
    return rows


def _solving_time(lines, year):
    """The stamp of the "Solving" line; as in parse_log.py, the lines up to it are consumed."""
    for line in lines:
        if "Solving" in line:
            try:
                return extract_datetime_from_line(line, year)
            except ValueError:
                continue
    return None


def _parse_output(regex, row, rows, line, iteration, seconds, learning_rate):
    m = regex.search(line)
    if m:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                               ("LearningRate", learning_rate)])
        row[m.group(2)] = float(m.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return rows, row


def _fix_initial_nan_learning_rate(rows):
    if len(rows) > 1:
        rows[0]["LearningRate"] = rows[1]["LearningRate"]


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=",",
                   sparsity_rows=()):
    """`<log>.train` and `<log>.test` as parse_log.py, and `<log>.sparsity` when given rows."""
    base = os.path.basename(logfile_path)
    tables = [(train_rows, ".train"), (test_rows, ".test")]
    if sparsity_rows:
        tables.append((sparsity_rows, ".sparsity"))
    for rows, suffix in tables:
        path = os.path.join(output_dir, base + suffix)
        with open(path, "w", newline="") as f:
            if not rows:
                continue
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), delimiter=delimiter,
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
