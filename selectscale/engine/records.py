"""Per-epoch records: metrics.jsonl (one JSON object a line, always), the chosen loggers (configs/logger/: TensorBoard
by default; selectscale.loggers), a summary line, and a tqdm bar on an interactive terminal. Only rank 0 writes;
other ranks get a logger that does nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from selectscale.errors import OutputWriteError
from selectscale.loggers import TAGS, LogStart, build_loggers
from selectscale.runs.metrics import append_metrics

from .eta import EpochClock

log = logging.getLogger("selectscale")
DEFAULT_LOGGERS = {"tensorboard": {}}  # a config without a logger node: what every run logged before the group


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, loggers: Mapping[str, Any] | None = None,
                 first_epoch: int = 1, first_step: int = 0, partial_first_epoch: bool = False) -> None:
        """``loggers``: the config's ``logger`` node as a plain dict (None: TensorBoard). ``first_epoch`` and
        ``first_step``: what this process logs first; on a resume the loggers hide later points of the first run.
        ``partial_first_epoch``: that epoch resumes mid-way, so its time is no measure of an epoch (the ETA)."""
        self.enabled = enabled
        self.run_dir = run_dir
        self.clock = EpochClock(skip_first=partial_first_epoch)  # the ETA after each epoch (issue 36)
        start = LogStart(run_dir, first_epoch, first_step)
        self.loggers = build_loggers(DEFAULT_LOGGERS if loggers is None else loggers, start) if enabled else []

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record, plot it, and print the one-line summary."""
        if not self.enabled:
            return
        append_metrics(self.run_dir, record)  # first and fsynced: the epoch counts once it is here
        scalars = {key: record[key] for key in TAGS["epoch"] if record.get(key) is not None}
        self._each("log_scalars", record["epoch"], scalars, "epoch")
        eta, note = self.clock.after_epoch(record["epoch"], record["epochs"], record["seconds"])
        log.info(summary_line(record) + (f" | {eta}" if eta else ""))
        if note:
            log.info("%s", note)

    def log_step(self, step: int, scalars: dict) -> None:
        """Per-step scalars (``logger.log_every_n_steps``): train_loss, lr, drop_strength at optimizer step ``step``."""
        self._each("log_scalars", step, scalars, "step")

    def log_hparams(self, hparams: dict, metrics: dict) -> None:
        """The run's hyperparameters with its final metrics (TensorBoard's HParams tab, W&B's config, MLflow's
        params); rank 0 only."""
        self._each("log_hparams", hparams, metrics)

    def _each(self, method: str, *args) -> None:
        for logger in self.loggers:
            try:
                getattr(logger, method)(*args)
            except OSError as error:  # a full disk: exit 5 like a failed checkpoint; the last checkpoint is intact
                raise OutputWriteError(f"could not write the {logger.name} logs of {self.run_dir}: "
                                       f"{error.strerror or error}; the previous checkpoints are intact (free disk "
                                       "space, then resume with trainer.resume=auto)") from error

    def close(self) -> None:
        loggers, self.loggers = self.loggers, []
        for index, logger in enumerate(loggers):
            try:
                logger.close()
            except BaseException:
                for other in loggers[index + 1:]:  # the others still close; the first failure is raised
                    other.close()
                raise


def summary_line(record: dict) -> str:
    text = (f"epoch {record['epoch']:>3}/{record['epochs']} | lr {record['lr']:.4g} | "
            f"strength {record['drop_strength']:.2f} | train loss {record['train_loss']:.4f} "
            f"err {100 * record['train_top1_error']:.2f}%")
    if record.get("test_loss") is not None:
        text += (f" | test loss {record['test_loss']:.4f} top-1 {100 * record['test_top1_error']:.2f}% "
                 f"top-5 {100 * record['test_top5_error']:.2f}%")
    return text + f" | {record['images_per_second']:.0f} img/s | {record['seconds']:.1f} s"


def progress_bar(total: int, epoch: int, enabled: bool):
    """A tqdm bar for one epoch when enabled and stderr is a terminal; else a no-op wrapper."""
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, disable=not show, dynamic_ncols=True)
