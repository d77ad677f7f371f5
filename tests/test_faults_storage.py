"""Fault injection, storage and files: a disk that fills, a checkpoint that cannot be written, damaged data
files at the train.py level and a checkpoint carrying code. Tiny deterministic CPU trainings (in-process or
real train.py processes) assert one-line errors with the documented exit status and checkpoints that stay
intact and loadable; tests/test_faults.py covers kills, signals, divergence and DDP peers."""

from __future__ import annotations

import errno
import importlib
import io
import json
import logging
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import (
    IN_PROCESS_EPOCHS,
    TINY,
    assert_equals_reference,
    assert_previous_state_intact,
    dir_state,
    in_dir,
    make_cfg,
    message_lines,
    run_train,
    write_sidecar,
)
from PIL import Image

from selectscale.engine import fit, register_configs
from selectscale.errors import CheckpointError, OutputWriteError
from selectscale.runs import checkpoint as checkpoint_module
from selectscale.runs import files as atomic_module
from selectscale.runs.checkpoint import load_checkpoint, read_checkpoint_file

pytestmark = pytest.mark.slow
fit_module = importlib.import_module("selectscale.engine.trainer")  # the package exports fit(), not the module
register_configs()


# --- 3. a checkpoint that cannot be written ---------------------------------------------------------------------

class _DiskFullFile(io.FileIO):
    """A file whose writes store half the bytes, then fail as on a full disk."""

    def write(self, data) -> int:
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)


def test_disk_full_during_the_second_checkpoint_is_a_clear_error_and_keeps_the_first(
        in_process_reference, tmp_path, monkeypatch):
    """The second checkpoint's write fails half-way with ENOSPC: CheckpointError naming the run directory and
    the cause; the first checkpoint and result.json are intact and loadable, no partial file is left, and
    resuming once there is space again finishes exactly like the uninterrupted run."""
    run_dir = tmp_path / "run"
    real_open, opened = open, {"staged": 0}

    def open_filling_the_disk(path, mode="r", *args, **kwargs):
        if Path(path).name == checkpoint_module.STAGED:  # the new checkpoint being written
            opened["staged"] += 1
            if opened["staged"] == 2:
                return _DiskFullFile(path, "wb")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic_module, "open", open_filling_the_disk, raising=False)  # every synced write
    with pytest.raises(CheckpointError) as error:
        fit(make_cfg(run_dir))
    message = str(error.value)
    assert "\n" not in message and str(run_dir) in message and "No space left on device" in message, message
    assert "trainer.resume=auto" in message
    monkeypatch.undo()
    assert_previous_state_intact(run_dir, epoch=1)
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]
    fit(make_cfg(run_dir, "trainer.resume=auto"))
    assert_equals_reference(run_dir, in_process_reference)


@pytest.mark.parametrize("full_from", ["epoch 2", "right after the first checkpoint"])
def test_a_disk_that_stays_full_is_a_clear_checkpoint_error(tmp_path, monkeypatch, full_from):
    """The disk fills up for good at the start of epoch 2, or right after the first checkpoint (before that
    epoch's result.json): from then on every write in the run directory fails with ENOSPC, whichever file comes
    first (metrics.jsonl, result.json, TensorBoard, the checkpoint). Expected: the documented failure
    (CheckpointError or OutputWriteError, exit 5 via train.py) naming the run directory and the cause, not a raw
    OSError traceback; the first checkpoint is intact and loadable and no result.json is left half-written."""
    run_dir = tmp_path / "run"
    real_open, real_io_open, full = open, io.open, {"now": False}
    real_save, real_train_epoch = fit_module.save_checkpoint, fit_module.train_epoch

    def writes_in_run_dir(path, mode) -> bool:
        return full["now"] and isinstance(path, str | os.PathLike) and any(c in mode for c in "wax+") \
            and Path(path).absolute().is_relative_to(run_dir)

    def guarded(opener):
        def open_on_a_full_disk(path, mode="r", *args, **kwargs):
            if writes_in_run_dir(path, mode):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return opener(path, mode, *args, **kwargs)
        return open_on_a_full_disk

    def save_then_fill(*args, **kwargs):
        path = real_save(*args, **kwargs)
        full["now"] = full["now"] or full_from != "epoch 2"
        return path

    def fill_then_train(model, loader, epoch, *args, **kwargs):
        full["now"] = full["now"] or (full_from == "epoch 2" and epoch == 1)
        return real_train_epoch(model, loader, epoch, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded(real_open))
    monkeypatch.setattr(io, "open", guarded(real_io_open))
    monkeypatch.setattr(fit_module, "save_checkpoint", save_then_fill)
    monkeypatch.setattr(fit_module, "train_epoch", fill_then_train)
    try:
        with pytest.raises((CheckpointError, OutputWriteError)) as error:  # whichever file is written first
            fit(make_cfg(run_dir))
    finally:
        monkeypatch.undo()
    message = str(error.value)
    assert "\n" not in message and str(run_dir) in message and "No space left on device" in message, message
    state = load_checkpoint(run_dir)
    assert state is not None and state["epoch"] == 1 and state["next_batch"] == 0
    if (run_dir / "result.json").exists():
        assert json.loads((run_dir / "result.json").read_text())["epochs_completed"] == 1


CHECKPOINT_RENAME_FAILS = """
import errno, os, types
import selectscale.runs.checkpoint as checkpoint
renames = {"latest": 0}
class FailingOs(types.ModuleType):
    def __getattr__(self, name):
        return getattr(os, name)
def replace(source, target):
    if os.path.basename(str(target)) == "checkpoint.pt":
        renames["latest"] += 1
        if renames["latest"] == 2:  # the second checkpoint, after the first was moved to checkpoint.prev.pt
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
    os.replace(source, target)
proxy = FailingOs("os")
proxy.replace = replace
checkpoint.os = proxy
"""


def test_checkpoint_write_failure_exits_5_with_one_line_via_train_py(tmp_path):
    """train.py when the file system turns read-only at the second checkpoint's final rename (after the first
    was rotated to checkpoint.prev.pt): exit 5, one line on stderr naming the run directory and the cause;
    the first checkpoint (now checkpoint.prev.pt) still loads, result.json is intact, and the second one, fully
    written as .checkpoint.staged.pt before the rename failed, is the newest that loads (nothing finished is lost)."""
    run_dir = tmp_path / "run"
    done = run_train([*TINY, "trainer.epochs=3", *in_dir(run_dir)], patch=CHECKPOINT_RENAME_FAILS)
    assert done.returncode == 5, done.stderr[-3000:]
    lines = message_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: could not write a checkpoint"), done.stderr
    assert str(run_dir) in lines[0] and "Read-only file system" in lines[0]
    assert read_checkpoint_file(run_dir / "checkpoint.prev.pt")["epoch"] == 1
    assert load_checkpoint(run_dir)["epoch"] == 2  # the staged file verifies: resume goes on from epoch 2
    result = json.loads((run_dir / "result.json").read_text())
    assert result["complete"] is False and result["epochs_completed"] == 1


# --- 4. bad data files at the train.py level --------------------------------------------------------------------

CIFAR_ARGS = ["dataset=cifar10", "model=resnet20", "trainer.epochs=1", "trainer.batch_size=4", "trainer.device=cpu",
              "trainer.progress_bar=false"]


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def remove(path: Path) -> Path:
    path.unlink()
    return path


@pytest.mark.parametrize("damage, file_name, fragment", [
    (truncate, "data_batch_2", "truncated or unreadable pickle"),
    (random_bytes, "test_batch", "truncated or unreadable pickle"),
    (remove, "batches.meta", "files missing: batches.meta"),
], ids=["truncated-batch", "random-bytes", "missing-meta"])
def test_damaged_cifar_files_stop_train_py_with_one_line_naming_the_file(write_tiny_cifar10, tmp_path, damage,
                                                                         file_name, fragment):
    """train.py on a CIFAR-10 folder (official layout) with a truncated batch, a file of random bytes or no
    batches.meta: exit 2, one line on stderr naming the file, and no run directory left behind (nothing was
    started, so a later run into the same directory must not be refused as an unfinished run)."""
    folder = write_tiny_cifar10(tmp_path / "data")
    damaged = damage(folder / file_name)
    run_dir = tmp_path / "run"
    done = run_train([*CIFAR_ARGS, f"dataset.root={tmp_path / 'data'}", *in_dir(run_dir)])
    assert done.returncode == 2, done.stderr[-3000:]
    lines = message_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    named = str(damaged) if damage is not remove else str(folder)
    assert named in lines[0] and fragment in lines[0], lines[0]
    assert not run_dir.exists(), f"left behind: {sorted(dir_state(run_dir))}"


IMAGENET_CLASSES = ("n01440764", "n01443537")


def tiny_imagenet_with_a_bad_image(root: Path) -> Path:
    """train/ (2 classes x 2 JPEGs, one cut after 300 bytes) and val/ (2 x 1); returns the bad file."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for wnid in IMAGENET_CLASSES:
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
    bad = root / "train" / IMAGENET_CLASSES[1] / f"{IMAGENET_CLASSES[1]}_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    return bad


IMAGENET_ARGS = ["dataset=imagenet", "trainer.epochs=1", "trainer.batch_size=4", "dataset.workers=0",
                 "trainer.device=cpu", "trainer.progress_bar=false"]


def test_unreadable_imagenet_image_fails_or_is_skipped_and_counted_by_train_py(tmp_path):
    """train.py on an ImageFolder with a truncated JPEG: dataset.on_bad_image=fail stops with exit 2 and one
    line naming the file; skip finishes the run and warns with the count and the file."""
    root = tmp_path / "imagenet"
    bad = tiny_imagenet_with_a_bad_image(root)
    failing = run_train([*IMAGENET_ARGS, f"dataset.root={root}", "dataset.on_bad_image=fail",
                         *in_dir(tmp_path / "fail")])
    assert failing.returncode == 2, failing.stderr[-3000:]
    lines = message_lines(failing.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: unreadable image"), failing.stderr
    skipping = run_train([*IMAGENET_ARGS, f"dataset.root={root}", "dataset.on_bad_image=skip",
                          *in_dir(tmp_path / "skip")])
    assert skipping.returncode == 0, skipping.stderr[-3000:]
    assert "skipped 1 unreadable image(s) (on_bad_image='skip')" in skipping.stderr and str(bad) in skipping.stderr
    assert json.loads((tmp_path / "skip" / "result.json").read_text())["complete"] is True


# --- 7. a checkpoint carrying code ---------------------------------------------------------------------------------


class CodeOnLoad:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_checkpoint_carrying_code_is_refused_even_with_a_matching_sha256(in_process_reference, tmp_path,
                                                                         caplog, container):
    """checkpoint.pt = a real checkpoint (epoch 2 of this very run) plus an object whose unpickling runs code,
    with a matching .sha256 sidecar. trainer.resume=auto must not unpickle it (weights-only): the marker file
    is never created, a warning names the file, and the run does not resume from it: it starts afresh and ends
    exactly like the uninterrupted run (every epoch in metrics.jsonl). A plain load would have run the code."""
    marker = tmp_path / "marker"
    state = read_checkpoint_file(in_process_reference / "checkpoint.prev.pt")
    assert state["epoch"] == IN_PROCESS_EPOCHS - 1
    state["evil"] = CodeOnLoad(marker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    latest = run_dir / "checkpoint.pt"
    if container == "torch.save":
        torch.save(state, latest)
    else:
        latest.write_bytes(pickle.dumps(state))
    write_sidecar(latest)
    shutil.copy(latest, tmp_path / "payload.pt")
    with caplog.at_level(logging.INFO, logger="selectscale"):
        fit(make_cfg(run_dir, "trainer.resume=auto"))
    assert not marker.exists(), "the checkpoint's code ran"
    assert f"checkpoint {latest} could not be loaded safely" in caplog.text
    assert "resumed" not in caplog.text
    assert_equals_reference(run_dir, in_process_reference)
    # The payload is live: an unsafe load runs it (so the checks above are meaningful).
    if container == "torch.save":
        torch.load(tmp_path / "payload.pt", weights_only=False)
    else:
        pickle.loads((tmp_path / "payload.pt").read_bytes())
    assert marker.exists()


