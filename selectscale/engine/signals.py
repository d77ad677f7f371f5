"""Preemption: SIGTERM/SIGINT set a flag; the loop finishes the current step, checkpoints and exits."""

from __future__ import annotations

import signal
import threading


class Preempted(RuntimeError):
    """Raised after the checkpoint is written; the message says how to resume."""


class PreemptionFlag:
    """Context manager installing handlers for SIGTERM and SIGINT (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signal.Signals(signum).name

    def __enter__(self) -> PreemptionFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
