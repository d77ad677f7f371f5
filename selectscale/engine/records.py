"""Per-epoch records: metrics.jsonl (one JSON object a line), TensorBoard scalars, a summary line, and
a tqdm bar on an interactive terminal. Only rank 0 writes; other ranks get a logger that does nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from selectscale.errors import OutputWriteError
from selectscale.runs.layout import TENSORBOARD, check_entry
from selectscale.runs.metrics import append_metrics

log = logging.getLogger("selectscale")

# TensorBoard tag for every metrics.jsonl field that is plotted.
TENSORBOARD_TAGS = {
    "lr": "train/lr",
    "drop_strength": "train/drop_strength",
    "train_loss": "train/loss",
    "train_top1_error": "train/top1_error",
    "test_loss": "test/loss",
    "test_top1_error": "test/top1_error",
    "test_top5_error": "test/top5_error",
    "images_per_second": "speed/images_per_second",
}


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        """``purge_step``: on resume, TensorBoard hides events at or after this epoch from the first run."""
        self.enabled = enabled
        self.run_dir = run_dir
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            check_entry(run_dir / TENSORBOARD, folder=True)
            self._writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD), purge_step=purge_step)

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record, plot it, and print the one-line summary."""
        if not self.enabled:
            return
        append_metrics(self.run_dir, record)  # first and fsynced: the epoch counts once it is here
        try:
            for key, tag in TENSORBOARD_TAGS.items():
                if record.get(key) is not None:
                    self._writer.add_scalar(tag, record[key], record["epoch"])
            self._writer.flush()
        except OSError as error:  # a full disk: exit 5 like a failed checkpoint; the last checkpoint is intact
            raise OutputWriteError(f"could not write the TensorBoard events of {self.run_dir}: "
                                   f"{error.strerror or error}; the previous checkpoints are intact (free disk "
                                   "space, then resume with trainer.resume=auto)") from error
        log.info(summary_line(record))

    def log_hparams(self, hparams: dict, metrics: dict) -> None:
        """The run's hyperparameters with its final metrics, for TensorBoard's HParams tab (rank 0 only). Values
        that are not numbers, strings or booleans (lists, null) are shown as text."""
        if not self.enabled:
            return
        shown = {key: value if isinstance(value, bool | int | float | str) else str(value)
                 for key, value in hparams.items()}
        # run_name ".": the HParams summary goes into this run's own event folder, not a timestamped subfolder
        self._writer.add_hparams(shown, {key: value for key, value in metrics.items() if value is not None},
                                 run_name=".")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


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
