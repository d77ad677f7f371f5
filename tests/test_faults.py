"""Fault injection: what a run does when it is killed, stopped, diverges or loses a DDP peer (disks, files and
checkpoints carrying code: tests/test_faults_storage.py). Every test runs tiny deterministic CPU trainings (most as real
train.py processes) and asserts the documented behaviour: exact resumption, one-line errors with the documented
exit status, and checkpoints that stay intact and loadable."""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import (
    TINY,
    Launched,
    assert_equals_reference,
    assert_previous_state_intact,
    in_dir,
    make_cfg,
    message_lines,
    metrics,
    run_train,
    sidecar_matches,
)
from logger_helpers import epoch_summaries

from selectscale.engine import fit, register_configs
from selectscale.runs.checkpoint import read_checkpoint_file

pytestmark = pytest.mark.slow
fit_module = importlib.import_module("selectscale.engine.trainer")  # the package exports fit(), not the module
register_configs()
EPOCHS = 40  # subprocess runs: 40 epochs of 2 steps, a checkpoint after each (about 0.15 s an epoch)
RUN_ARGS = [*TINY, f"trainer.epochs={EPOCHS}"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted train.py run every interrupted one must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = run_train([*RUN_ARGS, *in_dir(run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["epoch"] for r in metrics(run_dir)] == list(range(1, EPOCHS + 1))
    return run_dir


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
    epochs = [line.split("/")[0].split()[-1] for line in epoch_summaries(launch.lines)]
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
    fallback = read_checkpoint_file(previous)
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
