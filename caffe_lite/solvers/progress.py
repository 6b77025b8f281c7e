"""A terminal progress bar (tqdm) for train and test: iteration, loss and ETA.

Only when the stream is a terminal: a redirected log never gets a bar, and its glog lines
stay exactly as Caffe's parse_log.py expects. While the bar is shown, the caffe_lite logger's
console handler is swapped for tqdm's (tqdm.contrib.logging), which erases the bar, writes
the log line and draws the bar again below it; a log file handler is left alone. On close
the bar erases itself (leave=False), so the screen keeps the log lines only.
"""
import contextlib

from ..log import LOG


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    def __init__(self, total, initial, stream, desc):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, file=stream, desc=desc, unit="iter",
                        dynamic_ncols=True, leave=False)

    def tick(self, loss=None):
        if loss is not None:
            self.bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()

    @classmethod
    @contextlib.contextmanager
    def shown(cls, total, initial, stream, desc):
        """The bar below the log lines while the block runs; None unless `stream` is a tty."""
        if not _isatty(stream):
            yield None
            return
        from tqdm.contrib.logging import logging_redirect_tqdm
        with logging_redirect_tqdm(loggers=[LOG]):
            bar = cls(total, initial, stream, desc)
            try:
                yield bar
            finally:
                bar.close()

    @classmethod
    @contextlib.contextmanager
    def for_solver(cls, solver, stream):
        with cls.shown(solver.param.max_iter, solver.iter, stream, "train") as bar:
            if bar is None:
                yield None
                return
            cb = solver.add_callback(after_update=lambda: bar.tick(solver.smoothed_loss))
            try:
                yield bar
            finally:
                solver.callbacks.remove(cb)

    @classmethod
    def simple(cls, total, stream, desc):
        return cls.shown(total, 0, stream, desc)
