"""Slow end-to-end checks (CI runs them): real-data learning, SIGTERM, 2-process DDP on gloo."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectscale.runs.checkpoint import read_checkpoint_file

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.train_size=512", "dataset.test_size=256", "model=resnet20",
         "trainer.batch_size=64", "trainer.device=cpu", "trainer.progress_bar=false", "schedule=cosine"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_train(args: list[str], cwd: Path, launcher: list[str] | None = None, timeout: int = 600):
    command = (launcher or [sys.executable]) + [str(REPO / "train.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if launcher else None
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_resnet20_selectscale_learns_real_cifar_mini(cifar_mini_root, tmp_path):
    """8 epochs, cosine, batch 128 on the 5,438 real training images: test top-1 error <= 55% (chance: 90%).
    SelectScale with top rate 0.1 (the Discussion's advice), retaining rate 0.4 and the linear curriculum of
    Tables 3-4 reached 47.8% in 8 epochs (194 s on a 2-core AMD EPYC, 2026-12-03; 35.8% in 15 epochs, twice the
    time, results/cifar_mini_short_runs.md). 8, not 15, to keep CI under 30 minutes on such a machine."""
    done = run_train(["dataset=cifar10", f"dataset.root={cifar_mini_root}", "model=resnet20", "drop=selectscale",
                      "drop.top_rate=0.1", "drop.retain_rate=0.4", "curriculum=linear", "schedule=cosine",
                      "trainer.epochs=8", "trainer.device=cpu", "trainer.progress_bar=false",
                      f"output_dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["complete"] and result["dataset"]["train_size"] == 5438 and result["dataset"]["test_size"] == 1017
    assert result["dataset"]["verified"] is False
    assert result["test_top1_error"] <= 0.55, result["test_top1_error"]


def test_sigterm_checkpoints_and_exits_with_a_resume_hint(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *SMALL, "trainer.epochs=30", f"output_dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 30
    assert process.returncode == 3, stderr[-2000:]
    assert "SIGTERM" in stderr and "trainer.resume=auto" in stderr
    assert (run_dir / "checkpoint.pt").is_file()
    assert not json.loads((run_dir / "result.json").read_text())["complete"]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """Global batch 64: 2 processes x 32 against 1 process with 2 micro-batches of 32. The loader shards by
    stride and micro-batch j takes the samples rank j would, with the same augmentation, so both runs
    compute the same BatchNorm statistics and the same gradients up to the order of floating-point sums
    (all-reduce versus accumulation). Measured: the first two step losses agree to 5e-8, then the
    rounding differences grow as training amplifies them (about 1e-4 by step 8 even at lr 0.01; faster at
    lr 0.1). At lr 0.01 the epoch losses agreed to 5e-6 and 2.3e-5 relative and the weights to 2.5e-4
    relative L2 after 16 steps (torch 2.15.0); torch 2.14.1 differed by 1.1e-4 in an epoch loss (measured
    2026-12-02, also on the code before issue 12, so not a change of ours); we allow 5e-4 and 2e-3.
    Running BN statistics are not compared (DDP keeps
    rank 0's, the single process updates them with both halves), nor the test loss, which uses them.
    Run in NCHW: with channels_last (the default) the epoch losses differed by 1.5e-4 relative (one CI run),
    presumably because the CPU's channels-last convolution kernels sum in an order that depends on the
    thread count, which torchrun lowers per process; the equivalence tested here is the data and gradient
    arithmetic, not a kernel's rounding."""
    common = [*SMALL, "trainer.epochs=2", "drop=none", "trainer.deterministic=true", "schedule.lr=0.01",
              "trainer.channels_last=false"]
    single = run_train([*common, "trainer.micro_batches=2", f"output_dir={tmp_path / 'single'}"], cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = run_train([*common, f"output_dir={tmp_path / 'ddp'}"], cwd=tmp_path, launcher=launcher, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["world_size"] == 2 and result["complete"]
    for one, two in zip(metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), strict=True):
        assert two["test_images"] == one["test_images"] == 256  # every test image exactly once
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=5e-4)
    weights = [read_checkpoint_file(tmp_path / name / "checkpoint.pt")["model"] for name in ("single", "ddp")]
    keys = [k for k, v in weights[0].items() if "running_" not in k and v.is_floating_point()]
    difference = sum(float((weights[0][k] - weights[1][k]).pow(2).sum()) for k in keys) ** 0.5
    norm = sum(float(weights[0][k].pow(2).sum()) for k in keys) ** 0.5
    assert difference / norm < 2e-3


def test_two_gloo_processes_score_the_whole_evaluation_pool_once(tmp_path):
    """Issue 37: under DDP each rank scores its contiguous shard of the pool and the counts are summed: every pool
    image exactly once, and the errors those of the saved network. Each rank evaluates with its own BatchNorm
    running statistics (the last training forward updates them per rank), so the DDP figures may differ from a
    one-process evaluation of rank 0's checkpoint by a few images; the counts may not."""
    pool = ["dataset.train_size=1000", "dataset.test_size=120", "dataset.train_per_class=6", "trainer.batch_size=20",
            "dataset.eval_pool=true", "dataset.selection_fraction=0.2", "trainer.epochs=1", "drop=selectscale",
            "trainer.channels_last=false"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = run_train([*SMALL, *pool, f"output_dir={tmp_path / 'ddp'}"], cwd=tmp_path, launcher=launcher, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    recorded = json.loads((tmp_path / "ddp" / "result.json").read_text())["eval_pool"]
    scored = subprocess.run([sys.executable, "-m", "selectscale.evaluate", str(tmp_path / "ddp"), "--pool", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    alone = json.loads(scored.stdout)
    for key in ("images", "unused_images", "test_images", "unused_per_class"):
        assert recorded[key] == alone[key], key
    assert recorded["test_images"] == 120 and recorded["images"] == recorded["unused_images"] + 120
    assert abs(recorded["errors"] - alone["errors"]) <= 0.02 * recorded["images"]
