"""Known failures of a training run, each reported as one line with its own exit status.

| status | meaning |
|---|---|
| 2 | bad input: config value, data files, run directory (nothing was changed) |
| 3 | stopped by SIGTERM/SIGINT after writing a checkpoint (resume with trainer.resume=auto) |
| 4 | non-finite training loss (the last good checkpoint is kept) |
| 5 | a checkpoint could not be written (the previous ones are intact) |
"""

from __future__ import annotations

import sys
from pathlib import Path

from selectscale.data.cifar import CifarFormatError
from selectscale.data.download import DownloadError
from selectscale.data.imagenet import BadImageError
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
}
KNOWN_FAILURES = tuple(EXIT_CODES)


def report_failure(error: BaseException) -> int:
    """Print ``error`` as one line on stderr; return its exit status."""
    code = next(code for kind, code in EXIT_CODES.items() if isinstance(error, kind))
    prefix = "stopped" if isinstance(error, Preempted) else "error"
    print(f"{prefix}: {' '.join(str(error).split())}", file=sys.stderr)
    return code


def remove_if_empty(run_dir: Path) -> None:
    """Remove a run directory that holds nothing (rmdir cannot delete anything else)."""
    try:
        run_dir.rmdir()
    except OSError:
        pass


def final_summary(result: dict, run_dir) -> str:
    """What a finished run prints last: its final errors and where to look further."""
    data = result["dataset"]
    official = "official" if data["verified"] else "not the verified official files"
    top1 = 100 * result["test_top1_error"]
    return (f"final test error (last epoch {result['epochs_completed']}): top-1 {top1:.2f}%, "
            f"top-5 {100 * result['test_top5_error']:.2f}% on {data['test_size']} {data['name']} test images "
            f"({official})\nrun directory: {run_dir}\nTensorBoard: tensorboard --logdir {run_dir}/tensorboard")
