"""result.json (schema version 1): the one file a table is built from.

It holds the final test errors of the *last* epoch (never the best epoch on the test set), every
hyperparameter, the data set and its ``verified`` flag, the code version, the hardware, and
``complete``: true only when every epoch ran.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from .atomic import write_atomic

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"


def git_commit() -> dict:
    """The commit of the code that ran, and whether the working tree had uncommitted changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_json_atomic(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON into ``path``, atomically and durably (:func:`.atomic.write_atomic`)."""
    write_atomic(path, json.dumps(payload, indent=2) + "\n")


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, or None if there is none; ValueError (with the reason) if it is not a JSON object."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"not readable JSON: {type(error).__name__}") from error
    if not isinstance(result, dict):
        raise ValueError(f"not a JSON object but a {type(result).__name__}")
    return result
