"""metrics.jsonl: one JSON object per finished epoch, appended and fsynced as the epoch ends.

A damaged last line (a write cut short by a kill) is dropped with a warning when resuming (that epoch is trained
again); a damaged line before it is refused by name. Reports read it leniently (:func:`read_metrics_lenient`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from selectscale.errors import OutputWriteError, RunDirError

from .files import append_line, read_text, write_atomic
from .layout import METRICS_FILE, check_entry

log = logging.getLogger("selectscale")


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one epoch's record; OutputWriteError (exit 5) when it cannot be written."""
    path = Path(run_dir) / METRICS_FILE
    check_entry(path)
    try:
        append_line(path, json.dumps(record) + "\n")
    except OSError as error:  # a full disk: exit 5 like a failed checkpoint; the last checkpoint is intact
        raise OutputWriteError(f"could not write {path}: {error.strerror or error}; the previous checkpoints are "
                               "intact (free disk space, then resume with trainer.resume=auto)") from error


def _lines(path: Path) -> list[str]:
    check_entry(path)
    try:
        return [line for line in read_text(path).splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is unreadable ({error}); move it away to resume without its history") from error


def read_metrics(run_dir: Path) -> list[dict]:
    """The epoch records of metrics.jsonl (see the module doc for damaged lines)."""
    path = Path(run_dir) / METRICS_FILE
    lines = _lines(path)
    records = []
    for number, line in enumerate(lines, start=1):
        record = _parse_record(line)
        if record is not None:
            records.append(record)
        elif number == len(lines):
            log.warning("%s: its last line is damaged (a write cut short); dropping it, the epoch is trained again",
                        path)
        else:
            raise RunDirError(f"{path} line {number} is damaged (not an epoch record); fix or delete that line, "
                              "or move the file away to resume without its history; nothing was changed")
    return records


def read_metrics_lenient(run_dir: Path) -> list[dict]:
    """The records for a report: [] when the file is missing, not a regular file, unreadable or damaged anywhere."""
    try:
        lines = _lines(Path(run_dir) / METRICS_FILE)
        records = [json.loads(line) for line in lines]
    except (RunDirError, ValueError):
        return []
    return records if all(isinstance(record, dict) for record in records) else []


def _parse_record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (written after the checkpoint a resume starts from), atomically."""
    path = Path(run_dir) / METRICS_FILE
    check_entry(path)
    if not path.exists():
        return
    records = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
