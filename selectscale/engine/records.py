"""Per-epoch records: metrics.jsonl (one JSON object a line), TensorBoard scalars, a summary line, and
a tqdm bar on an interactive terminal. Only rank 0 writes; other ranks get a logger that does nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .atomic import OutputWriteError, write_atomic
from .config import ConfigError

METRICS_FILE = "metrics.jsonl"

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
        self.path = run_dir / METRICS_FILE
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record, plot it, and print the one-line summary."""
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            for key, tag in TENSORBOARD_TAGS.items():
                if record.get(key) is not None:
                    self._writer.add_scalar(tag, record[key], record["epoch"])
            self._writer.flush()
        except OSError as error:  # a full disk: exit 5 like a failed checkpoint; the last checkpoint is intact
            raise OutputWriteError(f"could not write {self.path} or its TensorBoard events: "
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


def read_metrics(run_dir: Path) -> list[dict]:
    """The epoch records of metrics.jsonl. A damaged last line (a write cut short by a kill) is dropped with a
    warning: a resume writes that epoch again. A damaged line before it raises ConfigError naming it."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is unreadable ({error}); move it away to resume without its history") from error
    records = []
    for number, line in enumerate(lines, start=1):
        record = _parse_record(line)
        if record is not None:
            records.append(record)
        elif number == len(lines):
            log.warning("%s: its last line is damaged (a write cut short); dropping it, the epoch is trained again",
                        path)
        else:
            raise ConfigError(f"{path} line {number} is damaged (not an epoch record); fix or delete that line, "
                              "or move the file away to resume without its history; nothing was changed")
    return records


def _parse_record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (written after the checkpoint a resume starts from), atomically."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    records = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def progress_bar(total: int, epoch: int, enabled: bool):
    """A tqdm bar for one epoch when enabled and stderr is a terminal; else a no-op wrapper."""
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, disable=not show, dynamic_ncols=True)
