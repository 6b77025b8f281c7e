"""SIGINT / SIGHUP requests during training: Caffe's SignalHandler (signal_handler.cpp).

The handlers only set a flag; the solver polls get_action() once per iteration (and once
per test batch) and gets the effect chosen for that signal: "snapshot", "stop" or "none".
Defaults as `caffe train`: SIGINT stops (after the final snapshot), SIGHUP snapshots.
"""
import signal
import threading

from ..errors import CaffeError

EFFECTS = ("snapshot", "stop", "none")


def check_effect(value, flag):
    if value not in EFFECTS:
        raise CaffeError(f"-{flag}: Invalid signal effect \"{value}\" was specified "
                         f"(use snapshot, stop or none)")
    return value


class SignalHandler:
    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.sigint_effect = check_effect(sigint_effect, "sigint_effect")
        self.sighup_effect = check_effect(sighup_effect, "sighup_effect")
        self.got_sigint = False
        self.got_sighup = False
        self._old = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.got_sigint = True
        else:
            self.got_sighup = True

    def get_action(self):
        if self.got_sigint:
            self.got_sigint = False
            return self.sigint_effect
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        return "none"

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in ("SIGINT", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self):
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
        return False
