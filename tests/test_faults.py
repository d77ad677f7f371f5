"""Fault injection: what a run does when it is killed, stopped, starved of disk, fed bad data, diverges, loses
a DDP peer or meets a checkpoint carrying code. Every test runs tiny deterministic CPU trainings (most as real
train.py processes) and asserts the documented behaviour: exact resumption, one-line errors with the documented
exit status, and checkpoints that stay intact and loadable."""

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
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import (
    REPO,
    TINY,
    Launched,
    dir_state,
    message_lines,
    metrics,
    run_train,
    same_weights,
    sidecar_matches,
    weights,
    write_sidecar,
)
from hydra import compose, initialize_config_dir
from PIL import Image

from selectscale.engine import atomic as atomic_module
from selectscale.engine import checkpoint as checkpoint_module
from selectscale.engine import fit, register_configs
from selectscale.engine.atomic import OutputWriteError
from selectscale.engine.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow
fit_module = importlib.import_module("selectscale.engine.fit")  # the package exports fit(), not the module
register_configs()
EPOCHS = 40  # subprocess runs: 40 epochs of 2 steps, a checkpoint after each (about 0.15 s an epoch)
RUN_ARGS = [*TINY, f"trainer.epochs={EPOCHS}"]


def in_dir(run_dir: Path) -> list[str]:
    """Put the run (and Hydra's own directory) in ``run_dir``: nothing lands in the repository's runs/."""
    return [f"hydra.run.dir={run_dir}"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted train.py run every interrupted one must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = run_train([*RUN_ARGS, *in_dir(run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["epoch"] for r in metrics(run_dir)] == list(range(1, EPOCHS + 1))
    return run_dir


def assert_equals_reference(run_dir: Path, reference: Path) -> None:
    """Final weights and every epoch's metrics (test errors and losses included) equal, bit for bit."""
    assert json.loads((run_dir / "result.json").read_text())["complete"] is True
    assert same_weights(weights(run_dir), weights(reference)), "final weights differ from the uninterrupted run"
    got, want = metrics(run_dir), metrics(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want], "metrics.jsonl holds other epochs"
    assert got == want


# --- 1. SIGKILL at random moments, resumed with trainer.resume=auto --------------------------------------------

KILLS = 12
KILL_MODES = ("checkpoint", "random") * (KILLS // 2)  # "checkpoint": while a checkpoint file is being written


def _staged(run_dir: Path) -> dict[str, int]:
    """The temporary checkpoint files in ``run_dir`` with their mtimes (leftovers of earlier kills included)."""
    found = {}
    if run_dir.is_dir():
        for name in os.listdir(run_dir):
            if "checkpoint.staged" in name:
                try:
                    found[name] = os.stat(run_dir / name).st_mtime_ns
                except FileNotFoundError:
                    found[name] = -1  # renamed away while we looked: a write is going on
    return found


def _kill(launch: Launched, run_dir: Path, mode: str, rng: random.Random) -> dict | None:
    """SIGKILL ``launch`` once it trains: after a random delay, or as soon as a checkpoint write begins.
    None when it finished first."""
    before = _staged(run_dir)
    if mode == "random":
        if not launch.wait_for_line(r"resumed |epoch +\d+/", timeout=300):
            return None
        time.sleep(rng.uniform(0.0, 0.4))
    else:  # the next checkpoint write this process begins (on the first launch: the run's very first one)
        while launch.alive() and all(before.get(name) == mtime for name, mtime in _staged(run_dir).items()):
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, 0.002))
    if not launch.alive():
        return None
    os.kill(launch.pid, signal.SIGKILL)
    launch.wait(timeout=60)
    left = sorted(name for name in os.listdir(run_dir) if "checkpoint.staged" in name)
    epochs = [line.split("/")[0].split()[-1] for line in launch.lines if line.startswith("epoch ")]
    return dict(mode=mode, during_write=bool(set(_staged(run_dir).items()) - set(before.items())), left=left,
                last_epoch_logged=epochs[-1] if epochs else None)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A run SIGKILLed KILLS times (seeded), re-launched with trainer.resume=auto until it completes."""
    run_dir = tmp_path_factory.mktemp("sigkill") / "run"
    rng = random.Random(20240611)
    kills: list[dict] = []
    for _ in range(KILLS + 10):
        launch = Launched([*RUN_ARGS, *in_dir(run_dir), "trainer.resume=auto"])
        if len(kills) < KILLS:
            landed = _kill(launch, run_dir, KILL_MODES[len(kills)], rng)
            if landed is not None:
                kills.append(landed)
                continue
        assert launch.wait(timeout=300) == 0, launch.output()[-3000:]
        break
    print(f"\nSIGKILLs: {kills}")
    return run_dir, kills


def test_sigkill_at_random_moments_then_resume_equals_the_uninterrupted_run(killed_run, reference_run):
    """At least 10 SIGKILLs (seeded delays; half of them as soon as a checkpoint write begins, the first one
    aimed at the run's very first checkpoint), each followed by train.py with trainer.resume=auto: the finished run's
    metrics.jsonl (train and test losses and errors of every epoch) and final weights equal the uninterrupted
    run's exactly."""
    run_dir, kills = killed_run
    assert len(kills) >= 10, kills
    assert sum(kill["during_write"] for kill in kills) >= 3, kills
    assert sidecar_matches(run_dir / "checkpoint.pt")
    assert_equals_reference(run_dir, reference_run)


def test_sigkill_leaves_no_stale_temporary_files_once_the_run_completes(killed_run):
    """The temporary files of killed writes (.checkpoint.staged.pt.tmp-<pid>, .result.json.tmp-<pid>, ...) do
    not pile up in the run directory (each is a whole checkpoint): the completed run directory holds none."""
    run_dir, _ = killed_run
    stale = sorted(p.name for p in run_dir.iterdir() if ".tmp-" in p.name or "checkpoint.staged" in p.name
                   or p.name.startswith(".write-test"))
    assert not stale, f"stale temporary files left in {run_dir}: {stale}"


def test_killed_before_the_first_checkpoint_then_resumed_does_not_repeat_epoch_1(in_process_reference, tmp_path):
    """The state a SIGKILL leaves when it lands during the very first checkpoint write (the first kill above):
    config.yaml and epoch 1's line in metrics.jsonl, no checkpoint. trainer.resume=auto starts afresh and must
    not keep the stale line: metrics.jsonl then lists every epoch once, as the uninterrupted run's does."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(in_process_reference / "config.yaml", run_dir / "config.yaml")
    first_line = (in_process_reference / "metrics.jsonl").read_text().splitlines()[0]
    (run_dir / "metrics.jsonl").write_text(first_line + "\n")
    fit(make_cfg(run_dir, "trainer.resume=auto"))
    assert_equals_reference(run_dir, in_process_reference)


# --- 1b + 2. SIGTERM mid-epoch (exit 3 within 30 s), then a damaged latest checkpoint ---------------------------


def test_sigterm_mid_epoch_then_a_damaged_latest_checkpoint_falls_back_to_the_previous(reference_run, tmp_path):
    """SIGTERM at a random moment of epoch 4 (test_engine_slow covers it at an epoch boundary): exit 3 within
    30 s with a one-line stderr naming the signal and trainer.resume=auto, both checkpoints valid. Then bytes of
    checkpoint.pt are flipped (its sidecar untouched): resuming never loads it, says so (output and train.log)
    and resumes from checkpoint.prev.pt; the finished run equals the uninterrupted one exactly."""
    run_dir = tmp_path / "run"
    stderr_path = tmp_path / "stderr.txt"
    launch = Launched([*RUN_ARGS, *in_dir(run_dir)], stderr_path=stderr_path)
    assert launch.wait_for_line(r"epoch +3/", timeout=300), launch.output()[-3000:]
    time.sleep(random.Random(3).uniform(0.0, 0.1))
    signalled = time.monotonic()
    launch.process.send_signal(signal.SIGTERM)
    code = launch.wait(timeout=120)
    assert time.monotonic() - signalled < 30, "SIGTERM took more than 30 s to stop the run"
    stderr = stderr_path.read_text()
    assert code == 3, stderr[-3000:]
    lines = message_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("stopped: "), stderr
    assert "SIGTERM" in lines[0] and "trainer.resume=auto" in lines[0]
    latest, previous = run_dir / "checkpoint.pt", run_dir / "checkpoint.prev.pt"
    assert sidecar_matches(latest) and sidecar_matches(previous)
    fallback = torch.load(previous, weights_only=True)
    data = bytearray(latest.read_bytes())
    for index in range(1000, len(data), len(data) // 7):
        data[index] ^= 0xFF
    latest.write_bytes(bytes(data))

    resumed = Launched([*RUN_ARGS, *in_dir(run_dir), "trainer.resume=auto"])
    assert resumed.wait(timeout=300) == 0, resumed.output()[-3000:]
    output = resumed.output()
    assert f"checkpoint {latest} is damaged" in output, output[-3000:]
    assert f"resumed {run_dir} at epoch {fallback['epoch'] + 1}, batch {fallback['next_batch']}" in output
    assert f"checkpoint {latest} is damaged" in (run_dir / "train.log").read_text()
    assert_equals_reference(run_dir, reference_run)


# --- 3. a checkpoint that cannot be written ---------------------------------------------------------------------

CONFIG_DIR = REPO / "configs"
IN_PROCESS_EPOCHS = 3


def make_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY, f"trainer.epochs={IN_PROCESS_EPOCHS}",
                                                       f"output_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def in_process_reference(tmp_path_factory) -> Path:
    """An uninterrupted in-process run (the in-process tests compare with it: same process, same numerics)."""
    run_dir = tmp_path_factory.mktemp("in_process") / "reference"
    fit(make_cfg(run_dir))
    return run_dir


class _DiskFullFile(io.FileIO):
    """A file whose writes store half the bytes, then fail as on a full disk."""

    def write(self, data) -> int:
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)


def assert_previous_state_intact(run_dir: Path, epoch: int) -> None:
    """The checkpoint of ``epoch`` loads (checksum verified, weights-only) and result.json reads as its epoch."""
    state = load_checkpoint(run_dir)
    assert state is not None and state["epoch"] == epoch and state["next_batch"] == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["complete"] is False and result["epochs_completed"] == epoch


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
import selectscale.engine.checkpoint as checkpoint
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
    the first checkpoint (now checkpoint.prev.pt) still loads, result.json is intact."""
    run_dir = tmp_path / "run"
    done = run_train([*TINY, "trainer.epochs=3", *in_dir(run_dir)], patch=CHECKPOINT_RENAME_FAILS)
    assert done.returncode == 5, done.stderr[-3000:]
    lines = message_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: could not write a checkpoint"), done.stderr
    assert str(run_dir) in lines[0] and "Read-only file system" in lines[0]
    assert_previous_state_intact(run_dir, epoch=1)


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


# --- 5. a non-finite loss -----------------------------------------------------------------------------------------

INFINITE_LOSS_AT_STEP_3 = """
import torch.nn.functional as F
real_cross_entropy, training_losses = F.cross_entropy, [0]
def poisoned(*args, **kwargs):
    loss = real_cross_entropy(*args, **kwargs)
    if kwargs.get("reduction", "mean") == "mean":  # training (evaluation sums)
        training_losses[0] += 1
        if training_losses[0] == 3:  # epoch 2, step 1
            return loss * float("inf")
    return loss
F.cross_entropy = poisoned
"""


def test_infinite_loss_exits_4_naming_epoch_and_step_and_the_run_resumes_exactly(reference_run, tmp_path):
    """An infinite training loss at epoch 2, step 1 (train.py; test_engine_fit covers NaN in-process): exit 4
    and one line naming epoch 2, step 1; the last good checkpoint (epoch 1) and result.json are intact, and
    resuming from them finishes exactly like the uninterrupted run."""
    run_dir = tmp_path / "run"
    done = run_train([*RUN_ARGS, *in_dir(run_dir)], patch=INFINITE_LOSS_AT_STEP_3)
    assert done.returncode == 4, done.stderr[-3000:]
    lines = message_lines(done.stderr)
    assert len(lines) == 1 and "non-finite training loss (inf) at epoch 2, step 1" in lines[0], done.stderr
    assert_previous_state_intact(run_dir, epoch=1)
    resumed = run_train([*RUN_ARGS, *in_dir(run_dir), "trainer.resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_equals_reference(run_dir, reference_run)


# --- 6. DDP: a rank dies ------------------------------------------------------------------------------------------


def _job_processes(tag: str) -> dict[int, str]:
    """{pid: RANK} of the live worker processes whose environment carries ``tag``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"SELECTSCALE_FAULT_TAG={tag}".encode() in environ and state != "Z":
            ranks = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"RANK=")]
            if ranks:
                found[int(entry.name)] = ranks[0]
    return found


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"], ids=["rank-1-killed", "rank-1-frozen"])
def test_ddp_job_exits_non_zero_within_the_timeout_when_rank_1_dies_or_hangs(tmp_path, how):
    """torchrun with 2 gloo processes and trainer.dist_timeout_s=20; mid-run, rank 1 is SIGKILLed (torchrun
    notices the dead worker) or SIGSTOPped (a hung rank: only the collective timeout can notice). Either way the
    whole job exits non-zero within the timeout plus a generous margin (90 s) instead of hanging, no worker
    survives, and the checkpoint left (if any) is still a valid one."""
    run_dir = tmp_path / "run"
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SELECTSCALE_FAULT_TAG": tag}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32",
            "model=resnet20", "schedule=cosine", "trainer.epochs=500", "trainer.device=cpu",
            "trainer.progress_bar=false", "trainer.dist_timeout_s=20", *in_dir(run_dir)]
    launch = Launched(args, env=env, launcher=launcher)
    try:
        assert launch.wait_for_line(r"epoch +2/", timeout=300), launch.output()[-3000:]
        ranks = {rank: pid for pid, rank in _job_processes(tag).items()}
        assert set(ranks) == {"0", "1"}, ranks
        time.sleep(random.Random(5).uniform(0.0, 0.2))
        stopped = time.monotonic()
        os.kill(ranks["1"], getattr(signal, how))
        code = launch.wait(timeout=90)
        elapsed = time.monotonic() - stopped
        errors = [line for line in launch.lines if "rror" in line or "imed out" in line][:8]
        print(f"\nDDP ({how} rank 1): exit {code} {elapsed:.1f} s later; error lines:\n" + "\n".join(errors))
        assert elapsed < 90
    finally:
        if launch.alive():
            launch.kill_group()
        for pid in _job_processes(tag):  # workers of this job only (tagged), should any outlive the launcher
            os.kill(pid, signal.SIGKILL)
    assert code != 0, launch.output()[-3000:]
    assert not _job_processes(tag)
    if (run_dir / "checkpoint.pt").exists():
        assert sidecar_matches(run_dir / "checkpoint.pt")
    assert json.loads((run_dir / "result.json").read_text())["complete"] is False


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
    state = torch.load(in_process_reference / "checkpoint.prev.pt", weights_only=True)
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


# --- extra: every run of a multirun keeps its own train.log -------------------------------------------------------


def test_each_run_of_a_multirun_has_only_its_own_lines_in_train_log(tmp_path):
    """`train.py -m seed=0,1` (what `selectscale.experiments run` launches for a table row) trains both seeds in
    one process: seed 0's train.log must not receive seed 1's epoch lines."""
    done = run_train(["-m", "seed=0,1", *TINY, "trainer.epochs=2", f"hydra.sweep.dir={tmp_path}",
                      "hydra.sweep.subdir=seed${seed}"])
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        epochs = [line for line in (tmp_path / f"seed{seed}" / "train.log").read_text().splitlines() if "epoch" in line]
        assert len(epochs) == 2, f"seed{seed}/train.log holds {len(epochs)} epoch lines:\n" + "\n".join(epochs)
