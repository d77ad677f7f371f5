"""Preemption: SIGTERM/SIGINT/SIGUSR2 set a flag; the loop finishes the current step, checkpoints and exits.

SIGUSR2 is what Slurm sends before a job's time limit (``--signal=USR2@120``: the launcher preset
``submitit_slurm_requeue``'s ``signal_delay_s``, submitit's default), and submitit installs its own handler for it
that requeues the job (a timeout, up to ``max_num_timeout`` times) and exits. Ours takes the signal first, so the
checkpoint is written, and then hands it to the handler that was there before (submitit's), which requeues. SIGTERM
is what Slurm sends at a preemption (``scontrol requeue``): checkpoint and exit 3; Slurm itself requeues the job.
Tested against a real Slurm in tests/test_slurm.py.
"""

from __future__ import annotations

import signal
import threading

from selectscale.errors import Preempted

__all__ = ["Preempted", "PreemptionFlag"]


class PreemptionFlag:
    """Context manager installing handlers for SIGTERM, SIGINT and SIGUSR2 (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    FORWARDED = signal.SIGUSR2  # passed on to the previous handler once the checkpoint is written

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
        previous = self._previous.get(self.FORWARDED)
        if self.received == self.FORWARDED.name and callable(previous):
            previous(self.FORWARDED, None)  # e.g. submitit: requeue the job (it resumes from the checkpoint)
