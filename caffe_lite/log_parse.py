"""Parse a training log the way Caffe's tools/extra/parse_log.py does (same regexes, same rows).

    train_rows, test_rows = parse_log("train.log")

Each row is an OrderedDict: NumIters, Seconds (since the "Solving" line), LearningRate, then
one column per net output ("loss", "accuracy", ...). A row is complete when it has as many
columns as the first one; the LearningRate of the first row (logged before any "lr =" line)
is copied from the second. save_csv_files writes `<log>.train` / `<log>.test` as parse_log.py.
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


def extract_datetime_from_line(line, year):
    """glog's `I1123 00:00:00.000000 ...` prefix as a datetime in `year`."""
    fields = line.strip().split()
    month = int(fields[0][1:3])
    day = int(fields[0][3:])
    stamp = fields[1]
    pos = stamp.rfind(".")
    hour, minute, second = (int(x) for x in stamp[:pos].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(stamp[pos + 1:]))


def get_start_time(lines, year):
    for line in lines:
        if "Solving" in line:
            return extract_datetime_from_line(line, year)
    return None


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
    start = None
    for line in it:  # as parse_log.py: lines up to "Solving" are consumed by the start search
        if "Solving" in line:
            start = extract_datetime_from_line(line, year)
            break
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
            seconds = (extract_datetime_from_line(line, year) - start).total_seconds()
        except (ValueError, IndexError, TypeError):
            continue  # a line without a glog prefix (parse_log.py would exit here)
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


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=","):
    base = os.path.basename(logfile_path)
    for rows, suffix in ((train_rows, ".train"), (test_rows, ".test")):
        path = os.path.join(output_dir, base + suffix)
        with open(path, "w", newline="") as f:
            if not rows:
                continue
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), delimiter=delimiter,
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
