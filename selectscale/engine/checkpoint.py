"""Crash-safe checkpoints: atomic writes, a SHA-256 sidecar, the last two kept, weights-only loading.

``checkpoint.pt`` is the newest and ``checkpoint.prev.pt`` the one before. Each has a sidecar
``<name>.sha256`` written after it; a checkpoint counts only when its sidecar exists and matches, so
a file cut short by a crash, a full disk or a bit flip is never loaded: the loader says so and falls
back to the previous one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import torch

from selectscale.errors import CheckpointError

from .atomic import write_atomic, write_synced

log = logging.getLogger(__name__)

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
SNAPSHOTS = "snapshots"
STAGED = ".checkpoint.staged.pt"  # a new checkpoint being written; renamed to LATEST once complete




def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, run_dir: Path) -> Path:
    """Serialise ``state`` and make it the latest checkpoint; the old latest becomes the previous one.

    The new file is fully written and checked before anything is renamed, so a failure at any point
    (including a full disk) leaves at least the older checkpoints intact.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    latest, previous = run_dir / LATEST, run_dir / PREVIOUS
    staged = run_dir / STAGED
    try:
        write_synced(staged, data)
        write_synced(_sidecar(staged), digest.encode())
        if _is_valid(latest):
            os.replace(latest, previous)
            os.replace(_sidecar(latest), _sidecar(previous))
        os.replace(staged, latest)
        os.replace(_sidecar(staged), _sidecar(latest))
    except OSError as error:
        raise CheckpointError(
            f"could not write a checkpoint in {run_dir}: {error.strerror or error}; the previous checkpoints "
            "are intact (free disk space or fix permissions, then resume with trainer.resume=auto)"
        ) from error
    return latest


def _is_valid(path: Path) -> bool:
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == sidecar.read_text().strip()


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest valid checkpoint in ``run_dir`` (weights-only unpickling), or None if there is none.

    A damaged or unverifiable file is skipped with a warning naming it.
    """
    for path in (run_dir / LATEST, run_dir / PREVIOUS):
        if not path.exists():
            continue
        if not _is_valid(path):
            log.warning("checkpoint %s is damaged or has no matching checksum; ignoring it", path)
            continue
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001  (a pickle with code or a foreign file: refuse it)
            log.warning("checkpoint %s could not be loaded safely (%s); ignoring it", path, error)
    return None


def save_snapshot(weights: dict, run_dir: Path, epoch: int) -> Path:
    """Keep a model's weights after ``epoch`` as ``snapshots/epoch_NNNN.pt`` (atomic, with a checksum)."""
    path = run_dir / SNAPSHOTS / f"epoch_{epoch:04d}.pt"
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    try:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, buffer.getvalue())
        write_atomic(_sidecar(path), hashlib.sha256(buffer.getvalue()).hexdigest().encode())
    except OSError as error:
        raise CheckpointError(f"could not write the snapshot {path}: {error.strerror or error}; free disk space "
                              "or fix permissions, then resume with trainer.resume=auto") from error
    return path


def list_snapshots(run_dir: Path) -> dict[int, Path]:
    """{epoch: path} of the verified weight snapshots of a run; damaged ones are left out with a warning."""
    found = {}
    for path in sorted((run_dir / SNAPSHOTS).glob("epoch_*.pt")):
        if _is_valid(path):
            found[int(path.stem.split("_")[1])] = path
        else:
            log.warning("snapshot %s is damaged or has no matching checksum; ignoring it", path)
    return found


def load_weights(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A verified snapshot's weights (weights-only unpickling)."""
    if not _is_valid(path):
        raise CheckpointError(f"{path} is damaged or has no matching .sha256 checksum; it is not loaded")
    return torch.load(path, map_location=map_location, weights_only=True)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes a killed process never finished (only one process writes)."""
    stale = [*run_dir.glob(".*.tmp-*"), *run_dir.glob(f"{SNAPSHOTS}/.*.tmp-*"), run_dir / STAGED,
             _sidecar(run_dir / STAGED)]
    removed = [path for path in stale if path.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), run_dir)
    return removed


def has_checkpoint_files(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (LATEST, PREVIOUS))
