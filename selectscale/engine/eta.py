"""Honest time (issue 36): how long a run, or a queue of runs, still takes, from what was measured.

Nothing is benchmarked beforehand: a run's estimate comes from its own epochs (the mean time of the epochs this
process trained in full, evaluation included), a queue's from the durations of its finished jobs. Pure Python:
the run queue imports it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Above this many seconds for the whole run a note says so once, after the first epoch, with the way to shorten it.
LONG_RUN_S = 3600.0


def format_duration(seconds: float) -> str:
    """``~2 h 05 min``, ``~12 min``, ``~40 s``: rounded to what an estimate can claim."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"~{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"~{minutes} min"
    return f"~{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class EpochClock:
    """The epochs' measured seconds -> an ETA after each epoch and one note when the run takes hours.

    ``skip_first``: the first epoch this process finishes was resumed mid-way (its seconds cover part of it), so it
    is not a measure of an epoch."""

    skip_first: bool = False
    seconds: list[float] = field(default_factory=list)
    noted: bool = False

    def seconds_per_epoch(self) -> float | None:
        return sum(self.seconds) / len(self.seconds) if self.seconds else None

    def after_epoch(self, epoch: int, epochs: int, seconds: float) -> tuple[str | None, str | None]:
        """After epoch ``epoch`` (1-based) of ``epochs`` took ``seconds``: (the ETA for the epoch's summary line, or
        None on the last epoch or a partial one; the one-time note that the run takes hours, or None)."""
        if self.skip_first:
            self.skip_first = False
            return None, None
        self.seconds.append(float(seconds))
        per_epoch = self.seconds_per_epoch()
        left = (epochs - epoch) * per_epoch
        eta = f"{format_duration(left)} left (at {per_epoch:.1f} s/epoch)" if epoch < epochs else None
        note = None
        if not self.noted:
            self.noted = True
            total = epochs * per_epoch
            if total > LONG_RUN_S and epoch < epochs:
                note = (f"{epochs} epochs at {per_epoch:.0f} s/epoch take {format_duration(total)} on this device "
                        f"({format_duration(left)} left); for a quicker look: trainer.epochs=N (the whole schedule "
                        "scales) or debug=quick")
        return eta, note


def queue_eta(durations: list[float], running_elapsed: list[float], pending: int, parallel: int) -> str | None:
    """``~3 h 10 min left for 12 runs``: the mean duration of the finished jobs (``durations``, seconds) for each run
    still to come, less what the running ones (``running_elapsed``) have done, shared by ``parallel`` slots. None
    before a job has finished or when nothing is left."""
    runs = len(running_elapsed) + pending
    if not durations or runs == 0:
        return None
    mean = sum(durations) / len(durations)
    work = pending * mean + sum(max(mean - elapsed, 0.0) for elapsed in running_elapsed)
    left = work / max(1, min(parallel, runs))
    return f"{format_duration(left)} left for {runs} run{'' if runs == 1 else 's'} (at {format_duration(mean)[1:]} " \
           "per finished run)"
