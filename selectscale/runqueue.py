"""Run many training commands on one machine, ``parallel`` at a time (``make table1 PARALLEL=k``).

Every run of a table (all rows x seeds) is one job: a plain ``train.py`` process with its own ``output_dir``
and ``trainer.resume=auto``, so finished runs are skipped and interrupted ones continue. A job that fails never
stops the others; the queue returns every failure. Each job's output goes to its own log file, since k
interleaved terminals are unreadable (a job without a log, e.g. a Hydra multirun on a cluster launcher, writes
to the terminal).

Stopping: every job starts in a session (process group) of its own, so a terminal's Ctrl-C reaches only the
queue. While it runs, the queue takes SIGTERM, SIGINT and SIGHUP itself: the first stops starting jobs and sends
SIGTERM once to every running job (the engine finishes its step, writes a checkpoint and exits with status 3);
the queue then waits for all of them. A second signal SIGKILLs their process groups, and the queue still waits,
so no job is ever left without its parent. Then :class:`QueueStopped` says what became of each job. The signal
handlers that were installed before are restored on return.

CPU threads are shared out: a job gets ``OMP_NUM_THREADS = cores // parallel`` (at least 1) unless the
caller's environment sets it. On one GPU the k processes share the device (the engine picks ``cuda``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selectscale.engine.eta import queue_eta
from selectscale.errors import Preempted

POLL_S = 0.2  # how often finished processes and signals are looked for (seconds): negligible against runs
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPPED_STATUS = 3  # the engine's status after a checkpoint on SIGTERM (selectscale/errors.py: Preempted)


@dataclass(frozen=True)
class Job:
    name: str  # e.g. "table1/wrn20_4-selectscale/seed3"
    command: tuple[str, ...]
    log: Path | None  # None: the job writes to the terminal


@dataclass(frozen=True)
class Failure:
    job: Job
    returncode: int

    def line(self) -> str:
        """One line: which job, its exit status, and where its log is."""
        where = f" (log: {self.job.log})" if self.job.log is not None else ""
        return f"{self.job.name}: exit {self.returncode}{where}"


@dataclass(eq=False)
class QueueStopped(Preempted):
    """The queue was stopped by a signal; every job it started has ended. ``str()`` is the one-line summary."""

    signal_name: str
    checkpointed: list[Job] = field(default_factory=list)  # exited 3: a checkpoint was written
    finished: list[Job] = field(default_factory=list)  # ended 0 while the queue was stopping
    before_checkpoint: list[Job] = field(default_factory=list)  # ended by the SIGTERM before training began
    killed: list[Job] = field(default_factory=list)  # SIGKILLed by a second signal (resume from the last checkpoint)
    failures: list[Failure] = field(default_factory=list)  # failed, before or while stopping
    not_started: list[Job] = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """``stopped by SIGTERM: 2 runs checkpointed, 5 runs not started`` (the counts that are not zero)."""
        parts = [f"{len(jobs)} run{'' if len(jobs) == 1 else 's'} {label}" for jobs, label in (
            (self.checkpointed, "checkpointed"), (self.finished, "finished meanwhile"),
            (self.before_checkpoint, "stopped before a first checkpoint"),
            (self.killed, "killed (resumed from their last checkpoint next time)"),
            (self.failures, "failed (listed above)"), (self.not_started, "not started")) if jobs]
        return f"stopped by {self.signal_name}: {', '.join(parts) or 'no run was going'}"


def job_environment(parallel: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each job: the caller's, with the CPU threads split between ``parallel`` jobs."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    return env


def _start(job: Job, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    if job.log is None:
        return subprocess.Popen(job.command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("ab") as log:  # appended: a resumed job keeps the log of its earlier attempts
        return subprocess.Popen(job.command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


class _Signals:
    """Records the stop signals while installed (``with``); the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __call__(self, signum: int, frame) -> None:
        self.received.append(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    @property
    def name(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else ""


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the job's process group (it and any worker it started), unless it has already been reaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def run_jobs(jobs: Sequence[Job], parallel: int, cwd: Path, echo: Callable[[str], object] = print) -> list[Failure]:
    """Run ``jobs`` in order, at most ``parallel`` at once; return the failures (empty: all succeeded).

    A stop signal (SIGTERM, SIGINT, SIGHUP) ends the queue as the module says and raises :class:`QueueStopped`
    once every started job has ended."""
    if parallel < 1:
        raise ValueError(f"parallel={parallel} must be >= 1")
    env, pending, running, failures, clock = job_environment(parallel), list(jobs), {}, [], _QueueClock(parallel)
    stopped = None
    terminated: set[str] = set()
    killed = False
    with _Signals() as signals:
        try:
            while pending or running:
                if signals.received and stopped is None:
                    stopped = QueueStopped(signals.name, not_started=pending, failures=failures)
                    pending = []
                    echo(f"[stop] {signals.name}: asking {len(running)} running job(s) to checkpoint and stop, "
                         f"{len(stopped.not_started)} not started (a second signal kills them)")
                while pending and len(running) < parallel:
                    job = pending.pop(0)
                    echo(f"[start] {job.name}" + (f" (log: {job.log})" if job.log is not None else ""))
                    running[job] = clock.start(job, _start(job, cwd, env))
                if stopped is not None:
                    for job, process in running.items():
                        if job.name not in terminated and process.poll() is None:
                            process.send_signal(signal.SIGTERM)
                        terminated.add(job.name)
                    if len(signals.received) > 1 and not killed:
                        echo(f"[stop] second signal ({signal.Signals(signals.received[-1]).name}): killing "
                             f"{len(running)} job(s)")
                        for process in running.values():
                            _kill_group(process)
                        killed = True
                for job, process in list(running.items()):
                    if process.poll() is not None:
                        del running[job]
                        _ended(job, process.returncode, stopped, failures, echo)
                        clock.ended(job, process.returncode, running, len(pending), echo, stopping=stopped is not None)
                time.sleep(POLL_S if running else 0)
        except BaseException:
            for process in running.values():  # an error of the queue itself: its jobs end with it, never orphaned
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in running.values():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    _kill_group(process)
                    process.wait()
            raise
    if stopped is not None:
        raise stopped
    return failures


class _QueueClock:
    """The jobs' start times and the finished ones' durations: after each finished job, while runs are left, the
    line ``[eta] ~2 h 10 min left for 12 runs (at 21 min per finished run)`` (engine.eta.queue_eta)."""

    def __init__(self, parallel: int) -> None:
        self.parallel, self.started, self.durations = parallel, {}, []

    def start(self, job: Job, process: subprocess.Popen) -> subprocess.Popen:
        self.started[job] = time.monotonic()
        return process

    def ended(self, job: Job, returncode: int, running: dict, pending: int, echo, stopping: bool) -> None:
        now = time.monotonic()
        started = self.started.pop(job, now)
        if returncode == 0:  # a failed job's time says nothing about a run's
            self.durations.append(now - started)
        if stopping:  # no run is left to estimate
            return
        elapsed = [now - self.started[other] for other in running if other in self.started]
        if (line := queue_eta(self.durations, elapsed, pending, self.parallel)) is not None:
            echo(f"[eta] {line}")


def _ended(job: Job, returncode: int, stopped: QueueStopped | None, failures: list[Failure], echo) -> None:
    """Book a job that has ended: a failure, or (while stopping) how it stopped."""
    if stopped is not None and returncode in (STOPPED_STATUS, 0, -signal.SIGTERM, -signal.SIGKILL):
        kind = {STOPPED_STATUS: ("checkpointed", stopped.checkpointed), 0: ("done", stopped.finished),
                -signal.SIGTERM: ("stopped", stopped.before_checkpoint),
                -signal.SIGKILL: ("killed", stopped.killed)}[returncode]
        kind[1].append(job)
        echo(f"[{kind[0]}] {job.name} (exit {returncode})")
        return
    echo(f"[{'done' if returncode == 0 else 'FAILED'}] {job.name} (exit {returncode})")
    if returncode != 0:
        failures.append(Failure(job, returncode))
