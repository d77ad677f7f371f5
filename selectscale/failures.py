"""Known failures of a training run, each reported as one line with its own exit status; the record of a
multirun's jobs (a failed job never stops the sweep); the lines a finished run prints last.

| status | meaning |
|---|---|
| 2 | bad input: config value, data files, run directory (nothing was changed) |
| 3 | stopped by SIGTERM/SIGINT after writing a checkpoint (resume with trainer.resume=auto) |
| 4 | non-finite training loss (the last good checkpoint is kept) |
| 5 | a checkpoint or another output (metrics, result.json) could not be written (the previous ones are intact) |
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selectscale.engine.steps import NonFiniteLossError
from selectscale.errors import Preempted, SelectScaleError, one_line

# Failures outside selectscale.errors' hierarchy (whose classes carry their own ``exit_status``): a file the data
# needs that is missing (the data layer names it), and a diverged run (engine.steps).
EXIT_CODES: dict[type[BaseException], int] = {
    FileNotFoundError: 2,
    NonFiniteLossError: 4,
}
KNOWN_FAILURES = (SelectScaleError, *EXIT_CODES)


def exit_status(error: BaseException) -> int:
    """The status a command exits with after the known failure ``error``: its class's ``exit_status`` (the
    hierarchy of selectscale.errors, the data errors included), or the table above."""
    if isinstance(error, SelectScaleError):
        return error.exit_status
    return next(code for kind, code in EXIT_CODES.items() if isinstance(error, kind))


def report_failure(error: BaseException) -> int:
    """Print ``error`` as one line on stderr; return its exit status."""
    prefix = "stopped" if isinstance(error, Preempted) else "error"
    print(f"{prefix}: {one_line(error)}", file=sys.stderr)
    return exit_status(error)


@dataclass
class SweepRecord:
    """The jobs of a multirun and the ones that failed, so that a failed job never stops the jobs after it: the
    sweep goes on, then ends with one line per failure and a non-zero status. The basic launcher's jobs are
    recorded in the launching process; jobs run by other processes (joblib) hand their records over through a
    folder (:meth:`hand_over`, :meth:`take_over`)."""

    jobs: int = 0
    failures: list[str] = field(default_factory=list)
    status: int = 0
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (run directory, outcome, top-1 %)

    def succeeded(self, job: str, result: dict) -> None:
        top1 = result.get("test_top1_error")
        self.outcomes.append((job, "done", "—" if top1 is None else f"{100 * top1:.2f}"))

    def failed(self, job: str, status: int, error: BaseException) -> None:
        reason = one_line(error)
        self.failures.append(f"{job}: exit {status}: {reason}")
        self.outcomes.append((job, f"failed (exit {status})", "—"))
        self.status = max(self.status, status)

    def hand_over(self, folder: str | None, name: str) -> bool:
        """Write this record (a job run by another process: joblib's workers) as ``folder/name.json`` for the
        process that launched the sweep to :meth:`take_over`; False when ``folder`` is not there (a launcher
        that runs jobs on other machines, such as submitit on SLURM, whose jobs cannot see the launching
        machine's temporary folder: the job then reports its failure to the launcher instead)."""
        if not folder or not Path(folder).is_dir():
            return False
        target = Path(folder) / f"{name}.json"
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            staging.write_text(json.dumps(asdict(self)))
            os.replace(staging, target)  # the launcher never reads half a record
        except OSError:
            staging.unlink(missing_ok=True)
            return False
        return True

    def take_over(self, folder: str | None) -> None:
        """Add the records the jobs of other processes left in ``folder`` (in job order) to this one."""
        for path in sorted(Path(folder).glob("*.json")) if folder else ():
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a record that cannot be read: the job's own output still names its outcome
            self.jobs += other["jobs"]
            self.failures += other["failures"]
            self.outcomes += [tuple(outcome) for outcome in other["outcomes"]]
            self.status = max(self.status, other["status"])

    def summary_table(self) -> str:
        """One line per job of the sweep: run directory, outcome, final test top-1 error."""
        width = max(len(job) for job, _, _ in self.outcomes)
        lines = [f"{'run directory'.ljust(width)}  {'outcome':<16}  test top-1 (%)"]
        lines += [f"{job.ljust(width)}  {outcome:<16}  {top1}" for job, outcome, top1 in self.outcomes]
        return "\n".join(lines)

    def finish(self) -> int:
        """After a multirun of several jobs, the table of its jobs; the failures (if any) on stderr; the exit
        status of the whole sweep."""
        if len(self.outcomes) > 1:
            print(f"sweep of {len(self.outcomes)} jobs:\n{self.summary_table()}", flush=True)
        if self.failures:
            print(f"error: {len(self.failures)} of {self.jobs} jobs of this sweep failed (the others ran):",
                  file=sys.stderr)
            for line in self.failures:
                print(f"  {line}", file=sys.stderr)
        return self.status


def final_summary(result: dict, run_dir) -> str:
    """What a finished run prints last: its final errors and where to look further."""
    data = result["dataset"]
    official = "official" if data["verified"] else "not the verified official files"
    top1, split = 100 * result["test_top1_error"], data.get("evaluated_on", "test")
    held = " held out of the training files" if split == "validation" else ""
    text = (f"final {split} error (last epoch {result['epochs_completed']}): top-1 {top1:.2f}%, "
            f"top-5 {100 * result['test_top5_error']:.2f}% on {data['test_size']} {data['name']} {split} images{held} "
            f"({official})\nrun directory: {run_dir}")
    loggers = (result.get("config") or {}).get("logger") or {"tensorboard": {}}  # no logger node: TensorBoard's
    if "tensorboard" in loggers:
        text += f"\nTensorBoard: tensorboard --logdir {shlex.quote(f'{run_dir}/tensorboard')}"
    return text
