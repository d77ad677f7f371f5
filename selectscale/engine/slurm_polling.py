"""How the submitit launcher learns that a Slurm job ended, bounded (issue 33); used by the launcher preset
``hydra/launcher=submitit_slurm_requeue`` (configs/hydra/launcher/), which names :class:`BoundedSlurmPolling`.

submitit waits for a job's result file and asks ``sacct`` for job states, every 2, 4, 8 ... up to 600 s. A job
that ends without a result file (``scancel``, a node failure, a kill) is noticed only through ``sacct``; where
accounting is absent (no slurmdbd: ``sacct`` fails) its state stays UNKNOWN and the launcher waits for ever. Here
the states come from ``sacct`` when it answers for a job, else from ``squeue --me --states=all`` (the controller's
own view, which needs no accounting), at most every ``poll_s`` seconds; a job that squeue no longer lists has
ended. When neither answers for ``unanswered_s`` seconds the launcher stops with one line naming the jobs.

Hydra takes a launcher class only from the ``hydra_plugins`` package, so this is a Hydra callback: at the start of
a multirun it gives submitit's Slurm jobs this watcher (``SlurmJob.watcher``, the one object all of them ask).
Slurm's state names are read from ``squeue -o '%i|%T'`` (fields we ask for), never from a message text.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

from hydra.experimental.callback import Callback

from selectscale.errors import SelectScaleError

log = logging.getLogger(__name__)

# squeue states of a job that may still run (submitit counts only its own list as unfinished): reported as
# RUNNING or PENDING, so that the launcher keeps waiting for them.
STILL_RUNNING = {"CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED", "STOPPED"}
STILL_PENDING = {"REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
ENDED_UNLISTED = "ENDED"  # a job squeue no longer lists (it ended longer ago than the controller's MinJobAge)


class SlurmUnreachable(SelectScaleError, RuntimeError):  # noqa: N818  (a state, as Preempted)
    """Neither sacct nor squeue answered for longer than the bound: the jobs' states are unknown."""


def squeue_states(job_ids: set[str], env: dict | None = None,
                  timeout_s: float = 60) -> dict[str, dict[str, str]] | None:
    """``{job id: {"JobID": ..., "State": ...}}`` for ``job_ids`` (submitit's ids: ``123`` or ``123_4``) from
    ``squeue --me``; a job it does not list is ENDED. None when squeue does not answer."""
    command = ["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    listed: dict[str, str] = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            listed[job_id] = state.split()[0].rstrip("+")
    states = {}
    for job_id in job_ids:
        state = listed.get(job_id, ENDED_UNLISTED)
        state = "RUNNING" if state in STILL_RUNNING else "PENDING" if state in STILL_PENDING else state
        states[job_id] = {"JobID": job_id, "State": state}
    return states


def _watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueFallbackWatcher(SlurmInfoWatcher):
        """submitit's watcher, asking squeue for the jobs sacct does not report, at most every ``delay_s``."""

        def __init__(self, delay_s: float, unanswered_s: float) -> None:
            super().__init__(delay_s=int(delay_s))
            self.unanswered_s = unanswered_s
            self._unanswered_since: float | None = None
            self._said_fallback = False

        def _sacct(self, command: list[str]) -> dict[str, dict[str, str]]:
            try:
                self._output = subprocess.check_output(command, shell=False, stderr=subprocess.DEVNULL, timeout=60)
            except (OSError, subprocess.SubprocessError) as error:
                if not self._said_fallback:
                    why = f"exit status {error.returncode}" if isinstance(error, subprocess.CalledProcessError) else \
                        type(error).__name__
                    log.warning("sacct failed (%s; no Slurm accounting here?): the launcher reads job states from "
                                "squeue instead, every %d s at most", why, self._delay_s)
                    self._said_fallback = True
                return {}
            return self.read_info(self._output)

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            states = self._sacct(command)
            unknown = {job for job in self._registered - self._finished if not states.get(job, {}).get("State")}
            if unknown:
                listed = squeue_states(unknown)
                if listed is None and not states:
                    self._unanswered(unknown)
                else:
                    self._unanswered_since = None
                states.update(listed or {})
            else:
                self._unanswered_since = None
            self._info_dict.update(states)
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

        def _unanswered(self, jobs: set[str]) -> None:
            now = time.time()
            self._unanswered_since = self._unanswered_since or now
            if now - self._unanswered_since > self.unanswered_s:
                names = ", ".join(sorted(jobs)[:5]) + (", ..." if len(jobs) > 5 else "")
                raise SlurmUnreachable(
                    f"neither sacct nor squeue answered for {now - self._unanswered_since:.0f} s: the state of Slurm "
                    f"job(s) {names} is unknown; check them with squeue or sacct, then run the same command again "
                    "(finished runs are kept, interrupted ones resume)")

    return SqueueFallbackWatcher


def bounded_watcher(poll_s: float = 30, unanswered_s: float = 600) -> Any:
    """A submitit Slurm watcher polling at most every ``poll_s`` seconds, with squeue where sacct does not answer."""
    return _watcher_class()(poll_s, unanswered_s)


class BoundedSlurmPolling(Callback):
    """Hydra callback: submitit's Slurm jobs of this multirun are polled by :func:`bounded_watcher`."""

    def __init__(self, poll_s: float = 30, unanswered_s: float = 600) -> None:
        if poll_s < 1 or unanswered_s < poll_s:
            raise SelectScaleError(f"hydra.callbacks.slurm_polling: poll_s={poll_s} must be >= 1 and unanswered_s="
                                   f"{unanswered_s} at least poll_s")
        self.poll_s, self.unanswered_s = poll_s, unanswered_s

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        try:
            from submitit.slurm import slurm
        except ImportError:  # the launcher itself will say that submitit is missing
            return
        slurm.SlurmJob.watcher = bounded_watcher(self.poll_s, self.unanswered_s)


__all__ = ["BoundedSlurmPolling", "SlurmUnreachable", "bounded_watcher", "squeue_states"]
