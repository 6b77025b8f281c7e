"""A background thread that produces batches in order, Caffe's BasePrefetchingDataLayer.

Batch k is a pure function of k (the reader is positioned for it and its random draws come
from a generator seeded with (seed, k)), so a resumed run sees the same batches. That also
makes a forked child simple: its producer thread stayed in the parent, so the child starts
its own at the next batch it needs.
"""
import os
import queue
import threading


class Prefetcher:
    def __init__(self, produce, depth=4, name="prefetch"):
        self.produce = produce  # produce(k) -> batch, for k = first, first + step, ...
        self.depth = max(1, int(depth))
        self.name = name
        self._thread = None
        self._queue = None
        self._stop = None
        self._pid = None

    def start(self, first, step=1):
        """Produce batches first, first + step, ... (step > 1: one reader's share of a stream
        that several readers take in turn)."""
        self.stop()
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run,
                                        args=(first, step, self._queue, self._stop),
                                        name=self.name, daemon=True)
        self._thread.start()
        self._pid = os.getpid()

    def _run(self, k, step, out, stop):
        while not stop.is_set():
            try:
                item = (k, self.produce(k), None)
            except BaseException as err:  # handed to the consumer, which re-raises it
                item = (k, None, err)
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            k += step

    def get(self):
        k, batch, err = self._queue.get()
        if err is not None:
            raise err
        return k, batch

    @property
    def running(self):
        return self._thread is not None and self._pid == os.getpid()

    def stop(self):
        if self._thread is None:
            return
        if self._pid != os.getpid():
            # a forked child: the thread stayed in the parent, maybe holding the queue's lock
            self._thread = self._queue = self._stop = None
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)
        self._thread = None
