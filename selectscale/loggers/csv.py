"""CSV files in RUN_DIR/csv/ (``logger=csv``): ``metrics.csv``, one row per epoch, and ``steps.csv``, one row per
logged optimizer step (only with ``logger.log_every_n_steps`` > 0). The first column is the axis (``epoch`` or
``step``), the others the scalars under their metrics.jsonl names (:data:`TAGS`'s keys); an empty cell is a value
the row does not have (the test columns of an epoch that was not evaluated). Each row is flushed as it is written.

On a resume, the rows at or after the first epoch (step) this process logs are dropped first: they came after the
checkpoint the run goes on from, and metrics.jsonl drops them too."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from typing import IO

from selectscale.runs.files import write_atomic
from selectscale.runs.layout import check_entry

from .base import TAGS, Logger, LogStart, register_logger

FOLDER = "csv"
FILES = {"epoch": "metrics.csv", "step": "steps.csv"}


@register_logger("csv")
class CSVLogger(Logger):
    def __init__(self, start: LogStart) -> None:
        super().__init__(start)
        self.folder = start.run_dir / FOLDER
        check_entry(self.folder, folder=True)
        self._files: dict[str, tuple[IO[str], csv.DictWriter]] = {}
        self._open("epoch")

    def _open(self, axis: str) -> csv.DictWriter:
        if axis in self._files:
            return self._files[axis][1]
        path = self.folder / FILES[axis]
        check_entry(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        columns = [axis, *TAGS[axis]]
        first = self.start.first(axis)
        text = io.StringIO()  # the header and the rows kept from an earlier process, replaced atomically
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(_rows_before(path, axis, first, columns))
        write_atomic(path, text.getvalue())
        handle = open(path, "a", newline="")  # noqa: SIM115  (kept open for the run; closed in close())
        writer = csv.DictWriter(handle, fieldnames=columns)
        self._files[axis] = (handle, writer)
        return writer

    def log_scalars(self, step: int, scalars: Mapping[str, float], axis: str = "epoch") -> None:
        writer = self._open(axis)
        writer.writerow({axis: step, **{key: scalars.get(key) for key in TAGS[axis]}})
        self._files[axis][0].flush()

    def close(self) -> None:
        for handle, _ in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._files.clear()


def _rows_before(path, axis: str, first: int, columns: list[str]) -> list[dict]:
    """The rows an earlier process wrote for points before ``first``, when the file has this logger's columns;
    a file of other columns (another version) is started afresh."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != columns:
            return []
        return [row for row in reader if row.get(axis, "").isdigit() and int(row[axis]) < first]
