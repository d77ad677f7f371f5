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

import shlex
import sys
from dataclasses import dataclass, field

from selectscale.data.cifar import CifarFormatError
from selectscale.data.download import DownloadError
from selectscale.data.unreadable import BadImageError
from selectscale.engine.atomic import OutputWriteError
from selectscale.engine.checkpoint import CheckpointError
from selectscale.engine.config import ConfigError
from selectscale.engine.signals import Preempted
from selectscale.engine.steps import NonFiniteLossError

EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2,
    CifarFormatError: 2,
    DownloadError: 2,
    BadImageError: 2,
    FileNotFoundError: 2,
    Preempted: 3,
    NonFiniteLossError: 4,
    CheckpointError: 5,
    OutputWriteError: 5,  # metrics, result.json: the previous files are intact, as for a checkpoint
}
KNOWN_FAILURES = tuple(EXIT_CODES)


def report_failure(error: BaseException) -> int:
    """Print ``error`` as one line on stderr; return its exit status."""
    code = next(code for kind, code in EXIT_CODES.items() if isinstance(error, kind))
    prefix = "stopped" if isinstance(error, Preempted) else "error"
    print(f"{prefix}: {' '.join(str(error).split())}", file=sys.stderr)
    return code


@dataclass
class SweepRecord:
    """The jobs of one multirun process and the ones that failed, so that a failed job never stops the
    jobs after it: the sweep goes on, then ends with one line per failure and a non-zero status."""

    jobs: int = 0
    failures: list[str] = field(default_factory=list)
    status: int = 0
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (run directory, outcome, top-1 %)

    def succeeded(self, job: str, result: dict) -> None:
        top1 = result.get("test_top1_error")
        self.outcomes.append((job, "done", "—" if top1 is None else f"{100 * top1:.2f}"))

    def failed(self, job: str, status: int, error: BaseException) -> None:
        reason = " ".join(str(error).split()) or type(error).__name__
        self.failures.append(f"{job}: exit {status}: {reason}")
        self.outcomes.append((job, f"failed (exit {status})", "—"))
        self.status = max(self.status, status)

    def summary_table(self) -> str:
        """One line per job of this process: run directory, outcome, final test top-1 error."""
        width = max(len(job) for job, _, _ in self.outcomes)
        lines = [f"{'run directory'.ljust(width)}  {'outcome':<16}  test top-1 (%)"]
        lines += [f"{job.ljust(width)}  {outcome:<16}  {top1}" for job, outcome, top1 in self.outcomes]
        return "\n".join(lines)

    def finish(self) -> int:
        """After a multirun of several jobs, the table of its jobs; the failures (if any) on stderr; the exit
        status of the whole sweep."""
        if len(self.outcomes) > 1:
            print(f"sweep of {len(self.outcomes)} jobs in this process:\n{self.summary_table()}", flush=True)
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
    return (f"final {split} error (last epoch {result['epochs_completed']}): top-1 {top1:.2f}%, "
            f"top-5 {100 * result['test_top5_error']:.2f}% on {data['test_size']} {data['name']} {split} images{held} "
            f"({official})\nrun directory: {run_dir}\nTensorBoard: tensorboard --logdir "
            f"{shlex.quote(f'{run_dir}/tensorboard')}")
