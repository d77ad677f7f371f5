"""Crash-safe checkpoints: self-verifying files, a rotation that a kill at any step cannot break, weights-only loading.

A checkpoint file is ``MAGIC``, the SHA-256 of the payload in hex, a newline, then the payload (``torch.save``
bytes): one file that carries its own checksum, so no kill can separate a file from its checksum. A file counts
only if it verifies: one cut short by a kill, a full disk or a bit flip is never loaded.

Saving (``save_checkpoint``), with the step a kill may interrupt:
  1. write and fsync ``.checkpoint.staged.pt``          -> latest and previous untouched; staged may be partial
  2. rename ``checkpoint.pt`` -> ``checkpoint.prev.pt``    -> staged is complete and the newest
  3. rename staged -> ``checkpoint.pt``; fsync the folder -> done
Loading takes the newest verified file of the three by its training progress (epoch, batch), so a kill after
step 1 or 2 resumes from the epoch just finished; ``recover_rotation`` (under the run's lock, before resuming)
finishes an interrupted rotation and removes a partial staged file. Files of earlier versions (a ``.sha256``
sidecar beside each) are still read.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import torch

from selectscale.errors import CheckpointError, RunDirError

from .files import fsync_folder, read_bytes, write_atomic, write_synced
from .layout import BEST, LATEST, PREVIOUS, SNAPSHOTS, STAGED, check_entry

log = logging.getLogger(__name__)

MAGIC = b"SELECTSCALE-CHECKPOINT-1\n"
_DIGEST = 64  # hex characters of a SHA-256


def encode(state: dict) -> bytes:
    """``state`` as one self-verifying checkpoint file's bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verified_payload(path: Path) -> bytes | None:
    """The payload of ``path`` if it verifies (its own checksum, or an earlier version's sidecar), else None.
    RunDirError for a link, pipe or folder in its place."""
    check_entry(path)
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return None
    if data.startswith(MAGIC):
        digest, payload = data[len(MAGIC):len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST + 1:]
        ok = len(data) > len(MAGIC) + _DIGEST and data[len(MAGIC) + _DIGEST:len(MAGIC) + _DIGEST + 1] == b"\n"
        return payload if ok and hashlib.sha256(payload).hexdigest().encode() == digest else None
    check_entry(_sidecar(path))
    try:
        expected = read_bytes(_sidecar(path)).decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    return data if hashlib.sha256(data).hexdigest() == expected else None


def _is_valid(path: Path) -> bool:
    return verified_payload(path) is not None


def save_checkpoint(state: dict, run_dir: Path) -> Path:
    """Make ``state`` the latest checkpoint; the old latest becomes the previous one (steps in the module doc)."""
    data = encode(state)
    latest, previous, staged = run_dir / LATEST, run_dir / PREVIOUS, run_dir / STAGED
    for path in (latest, previous, staged):
        check_entry(path)
    try:
        write_synced(staged, data)
        if _is_valid(latest):
            os.replace(latest, previous)
            if _sidecar(latest).is_file():  # an earlier version's file keeps its sidecar beside it
                os.replace(_sidecar(latest), _sidecar(previous))
        os.replace(staged, latest)
        fsync_folder(run_dir)
    except OSError as error:
        raise CheckpointError(
            f"could not write a checkpoint in {run_dir}: {error.strerror or error}; the previous checkpoints "
            "are intact (free disk space or fix permissions, then resume with trainer.resume=auto)"
        ) from error
    return latest


def recover_rotation(run_dir: Path) -> None:
    """Finish a rotation a kill interrupted (call with the run's lock held): a verified staged file is the newest
    checkpoint and becomes the latest; a partial one is removed."""
    staged, latest = run_dir / STAGED, run_dir / LATEST
    if verified_payload(staged) is None:
        staged.unlink(missing_ok=True)
        return
    if _is_valid(latest):
        os.replace(latest, run_dir / PREVIOUS)
    os.replace(staged, latest)
    fsync_folder(run_dir)
    log.info("finished the checkpoint rotation a killed process left in %s", run_dir)


def read_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """One checkpoint file's state if it verifies and loads safely (weights-only), else None."""
    payload = verified_payload(Path(path))
    return None if payload is None else _load_payload(Path(path), payload, map_location)


def _load_payload(path: Path, payload: bytes, map_location) -> dict | None:
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001  (a pickle with code or a foreign file: refuse it)
        log.warning("checkpoint %s could not be loaded safely (%s); ignoring it", path, error)
        return None
    if not isinstance(state, dict):
        log.warning("checkpoint %s holds a %s, not a checkpoint's dict; ignoring it", path, type(state).__name__)
        return None
    return state


def _progress(state: dict) -> tuple:
    values = (state.get("epoch"), state.get("next_batch"), state.get("global_step"))
    return tuple(value if isinstance(value, int) and not isinstance(value, bool) else -1 for value in values)


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest verified checkpoint in ``run_dir`` (latest, staged or previous, by training progress;
    weights-only unpickling), or None if there is none. A damaged file is skipped with a warning naming it."""
    newest = None
    for name in (LATEST, STAGED, PREVIOUS):
        path = run_dir / name
        payload = verified_payload(path)
        if payload is None:
            if path.exists() and name != STAGED:
                log.warning("checkpoint %s is damaged or has no matching checksum; ignoring it", path)
            continue
        state = _load_payload(path, payload, map_location)
        if state is not None and (newest is None or _progress(state) > _progress(newest)):
            newest = state
    return newest


def save_snapshot(weights: dict, run_dir: Path, epoch: int) -> Path:
    """Keep a model's weights after ``epoch`` as ``snapshots/epoch_NNNN.pt`` (atomic, self-verifying)."""
    path = run_dir / SNAPSHOTS / f"epoch_{epoch:04d}.pt"
    try:
        check_entry(path.parent, folder=True)
        path.parent.mkdir(exist_ok=True)
    except OSError as error:
        raise _write_error(f"the snapshot {path}", error) from error
    return _write_state(path, weights, f"the snapshot {path}")


def save_best(state: dict, run_dir: Path) -> Path:
    """Replace ``checkpoint.best.pt`` with ``state`` (the weights of the lowest validation error so far, with their
    epoch and error; atomic and self-verifying like every checkpoint). Never part of the resume rotation."""
    path = run_dir / BEST
    return _write_state(path, state, str(path))


def _write_state(path: Path, state: dict, what: str) -> Path:
    """``state`` written to ``path`` atomically in the self-verifying format; CheckpointError naming ``what``."""
    try:
        check_entry(path)
        write_atomic(path, encode(state))
    except OSError as error:
        raise _write_error(what, error) from error
    return path


def _write_error(what: str, error: OSError) -> CheckpointError:
    return CheckpointError(f"could not write {what}: {error.strerror or error}; free disk space or fix permissions, "
                           "then resume with trainer.resume=auto")


def read_best(run_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The state in ``checkpoint.best.pt`` if it verifies and loads safely, else None."""
    return read_checkpoint_file(run_dir / BEST, map_location)


def list_snapshots(run_dir: Path) -> dict[int, Path]:
    """{epoch: path} of the verified weight snapshots of a run; damaged ones are left out with a warning."""
    found = {}
    for path in sorted((run_dir / SNAPSHOTS).glob("epoch_*.pt")):
        try:
            valid = _is_valid(path)
        except RunDirError:
            valid = False
        if valid:
            found[int(path.stem.split("_")[1])] = path
        else:
            log.warning("snapshot %s is damaged, not a regular file or has no matching checksum; ignoring it", path)
    return found


def load_weights(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A verified snapshot's weights (weights-only unpickling); CheckpointError if it does not verify."""
    payload = verified_payload(path)
    state = None if payload is None else _load_payload(path, payload, map_location)
    if state is None:
        raise CheckpointError(f"{path} is damaged, has no matching checksum or holds no weights; it is not loaded")
    return state


def has_checkpoint_files(run_dir: Path) -> bool:
    return any(os.path.lexists(run_dir / name) for name in (LATEST, PREVIOUS, STAGED))
