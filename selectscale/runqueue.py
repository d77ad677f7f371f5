"""Run many training commands on one machine, ``parallel`` at a time (``make table1 PARALLEL=k``).

Every run of a table (all rows x seeds) is one job: a plain ``train.py`` process with its own ``output_dir``
and ``trainer.resume=auto``, so finished runs are skipped and interrupted ones continue, exactly as the
one-multirun-per-row path does. A job that fails never stops the others; the queue returns every failure.
Each job's output goes to its own log file, since k interleaved terminals are unreadable.

CPU threads are shared out: a job gets ``OMP_NUM_THREADS = cores // parallel`` (at least 1) unless the
caller's environment sets it. On one GPU the k processes share the device (the engine picks ``cuda``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.5  # how often finished processes are looked for (seconds): negligible against minutes-long runs


@dataclass(frozen=True)
class Job:
    name: str  # e.g. "table1/wrn20_4-selectscale/seed3"
    command: tuple[str, ...]
    log: Path


@dataclass(frozen=True)
class Failure:
    job: Job
    returncode: int

    def line(self) -> str:
        """One line: which job, its exit status, and where its log is."""
        return f"{self.job.name}: exit {self.returncode} (log: {self.job.log})"


def job_environment(parallel: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each job: the caller's, with the CPU threads split between ``parallel`` jobs."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    return env


def _start(job: Job, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("ab") as log:  # appended: a resumed job keeps the log of its earlier attempts
        return subprocess.Popen(job.command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def run_jobs(jobs: Sequence[Job], parallel: int, cwd: Path, echo=print) -> list[Failure]:
    """Run ``jobs`` in order, at most ``parallel`` at once; return the failures (empty: all succeeded).

    On KeyboardInterrupt the running jobs are sent SIGTERM (the engine checkpoints and exits) and waited for."""
    if parallel < 1:
        raise ValueError(f"parallel={parallel} must be >= 1")
    env, pending, running, failures = job_environment(parallel), list(jobs), {}, []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                echo(f"[start] {job.name} (log: {job.log})")
                running[job] = _start(job, cwd, env)
            for job, process in list(running.items()):
                if process.poll() is not None:
                    del running[job]
                    echo(f"[{'done' if process.returncode == 0 else 'FAILED'}] {job.name} (exit {process.returncode})")
                    if process.returncode != 0:
                        failures.append(Failure(job, process.returncode))
            time.sleep(POLL_S if running else 0)
    except KeyboardInterrupt:
        for process in running.values():
            process.terminate()
        for process in running.values():
            process.wait()
        raise
    return failures
