"""A terminal progress bar (tqdm) for train and test: iteration, loss and ETA.

Only when the stream is a terminal: a redirected log never gets a bar, and its glog lines
stay exactly as Caffe's parse_log.py expects. While the bar is shown, log lines to the same
stream go through tqdm.write so they scroll above it.
"""
import contextlib
import logging

from ..log import LOG


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _TqdmStream:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        from tqdm import tqdm
        text = text.rstrip("\n")
        if text:
            tqdm.write(text, file=self.stream)

    def flush(self):
        self.stream.flush()


class ProgressBar:
    def __init__(self, total, initial, stream, desc):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, file=stream, desc=desc, unit="iter",
                        dynamic_ncols=True, leave=True)
        self.stream = stream
        self._swapped = []
        for handler in LOG.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                self._swapped.append(handler)
                handler.setStream(_TqdmStream(stream))

    def tick(self, loss=None):
        if loss is not None:
            self.bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()
        for handler in self._swapped:
            handler.setStream(self.stream)
        self._swapped = []

    @classmethod
    @contextlib.contextmanager
    def for_solver(cls, solver, stream):
        if not _isatty(stream):
            yield None
            return
        bar = cls(solver.param.max_iter, solver.iter, stream, "train")
        cb = solver.add_callback(after_update=lambda: bar.tick(solver.smoothed_loss))
        try:
            yield bar
        finally:
            if cb in solver.callbacks:
                solver.callbacks.remove(cb)
            bar.close()

    @classmethod
    @contextlib.contextmanager
    def simple(cls, total, stream, desc):
        if not _isatty(stream):
            yield None
            return
        bar = cls(total, 0, stream, desc)
        try:
            yield bar
        finally:
            bar.close()
