"""What a run directory holds, by name, and the one check every file of it passes before it is opened.

    RUN_DIR/
      config.yaml                  the resolved config, written once at the start
      result.json                  the errors of the last epoch and every setting; ``complete: true`` at the end
      metrics.jsonl                one JSON object per finished epoch
      train.log                    the run's log lines
      checkpoint.pt                the newest checkpoint (self-verifying: :mod:`.checkpoint`)
      checkpoint.prev.pt           the one before
      .checkpoint.staged.pt        a checkpoint being written (complete only when it verifies)
      checkpoint.best.pt           trainer.keep_best: the weights of the lowest validation error (self-verifying)
      .lock                        held (flock) by the one process writing the directory
      tensorboard/  snapshots/     folders (profiler/: a debug=profile run's trace)

Every name above must be a regular file of the run's own (or, for the two folders, a real folder): a symbolic
link could make a run write into another run's files, a named pipe would block a reader forever, and a folder
cannot be read as a file. :func:`check_entries` refuses all of them with one line before anything is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from selectscale.errors import RunDirError

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
LOCK_FILE = ".lock"
LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
STAGED = ".checkpoint.staged.pt"
BEST = "checkpoint.best.pt"  # not part of the rotation: never loaded to resume
TENSORBOARD = "tensorboard"
SNAPSHOTS = "snapshots"
PROFILER = "profiler"  # trainer.profile_steps (debug=profile): torch.profiler's Chrome trace, TensorBoard's plugin

CHECKPOINT_FILES = (LATEST, STAGED, PREVIOUS)
# Sidecars of the checkpoints of earlier versions (a SHA-256 beside each file); still read, never written.
LEGACY_SIDECARS = tuple(f"{name}.sha256" for name in CHECKPOINT_FILES)
RUN_FILES = (CONFIG_FILE, RESULT_FILE, METRICS_FILE, LOG_FILE, LOCK_FILE, *CHECKPOINT_FILES, BEST, *LEGACY_SIDECARS)
RUN_FOLDERS = (TENSORBOARD, SNAPSHOTS, PROFILER)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def entry_problem(path: Path, folder: bool = False) -> str | None:
    """Why ``path`` cannot be the run's own file (or folder), or None when it is one or does not exist."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return f"cannot be inspected ({error.strerror or error})"
    if folder:
        return None if stat.S_ISDIR(mode) else f"is {_kind(mode) if not stat.S_ISREG(mode) else 'a file'}"
    if stat.S_ISREG(mode):
        return None
    return f"is {_kind(mode)}"


def check_entry(path: Path, folder: bool = False) -> None:
    """RunDirError (one line) unless ``path`` is absent or a regular file (a real folder with ``folder``)."""
    problem = entry_problem(path, folder)
    if problem:
        where = "folder" if folder else "file"
        raise RunDirError(f"{path} {problem} where the run keeps its own {where}: move it away (a run reads and "
                          "writes only its own regular files); nothing was changed")


def check_entries(run_dir: Path) -> None:
    """Refuse a run directory with a link, pipe, folder or device where one of its files or folders goes."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is a file, not a folder: choose another directory "
                          "(hydra.run.dir=... or output_dir=...); nothing was changed")
    for name in RUN_FILES:
        check_entry(run_dir / name)
    for name in RUN_FOLDERS:
        check_entry(run_dir / name, folder=True)
