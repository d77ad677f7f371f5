"""TensorBoard event files in RUN_DIR/tensorboard/ (``logger=tensorboard``, the default): the epoch scalars under the
tags every run has had (:data:`TAGS`), the HParams summary at the end; per-step scalars, when asked for, in the
subfolder ``steps/`` (a run of its own in TensorBoard, on the optimizer-step axis)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selectscale.runs.layout import TENSORBOARD, check_entry

from .base import TAGS, Logger, LogStart, register_logger, shown

STEPS_FOLDER = "steps"


@register_logger("tensorboard")
class TensorBoardLogger(Logger):
    def __init__(self, start: LogStart) -> None:
        super().__init__(start)
        self.folder = start.run_dir / TENSORBOARD
        check_entry(self.folder, folder=True)
        self._writers: dict[str, Any] = {}
        self._writer("epoch")  # created at once, as always: a run's event file exists from its start

    def _writer(self, axis: str):
        """The SummaryWriter of ``axis``; on a resume it hides the interrupted process's points at or after the
        first epoch (step) this process logs (``purge_step``)."""
        if axis not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.folder if axis == "epoch" else self.folder / STEPS_FOLDER
            self._writers[axis] = SummaryWriter(log_dir=str(folder), purge_step=self.start.first(axis))
        return self._writers[axis]

    def log_scalars(self, step: int, scalars: Mapping[str, float], axis: str = "epoch") -> None:
        writer = self._writer(axis)
        for key, tag in TAGS[axis].items():
            if scalars.get(key) is not None:
                writer.add_scalar(tag, scalars[key], step)
        if axis == "epoch":
            writer.flush()

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """For TensorBoard's HParams tab; values that are not numbers, strings or booleans are shown as text."""
        writer = self._writer("epoch")
        # run_name ".": the HParams summary goes into this run's own event folder, not a timestamped subfolder
        writer.add_hparams({key: shown(value) for key, value in hparams.items()},
                           {key: value for key, value in metrics.items() if value is not None}, run_name=".")
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
