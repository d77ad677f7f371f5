"""A run directory's state from its files alone: ``finished``, ``running``, ``interrupted`` or ``missing``
(the report and the table runner add ``foreign`` after comparing settings). Imports no torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

from selectscale.errors import RunDirError

from .files import read_text
from .layout import CHECKPOINT_FILES, CONFIG_FILE, RESULT_FILE, check_entries
from .lock import is_locked


def run_state(run_dir: Path) -> tuple[str, str]:
    """(state, one-line reason) of ``run_dir``; a link, pipe or folder in place of a run file is "foreign"."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "missing", "no run directory"
    try:
        check_entries(run_dir)
    except RunDirError as error:
        return "foreign", " ".join(str(error).split())
    if is_locked(run_dir):
        return "running", "another process holds its lock"
    try:
        result = json.loads(read_text(run_dir / RESULT_FILE))
    except FileNotFoundError:
        result = None
    except (OSError, ValueError, RunDirError):
        return "interrupted", "result.json is unreadable"
    if isinstance(result, dict) and result.get("complete") is True:
        return "finished", "complete"
    if isinstance(result, dict) or any(os.path.lexists(run_dir / name) for name in (*CHECKPOINT_FILES, CONFIG_FILE)):
        done = result.get("epochs_completed") if isinstance(result, dict) else None
        return "interrupted", f"stopped after epoch {done}" if done is not None else "started, no epoch finished"
    return "missing", "no run files"
