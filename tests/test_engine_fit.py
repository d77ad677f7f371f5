"""fit(): outputs, refusals, exact resume after an interruption, non-finite loss, curriculum."""

import json
import logging
import math
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from selectscale.engine import ConfigError, fit, register_configs
from selectscale.engine import steps as engine_steps
from selectscale.engine.signals import Preempted
from selectscale.engine.steps import NonFiniteLossError
from selectscale.runs.checkpoint import load_checkpoint, read_checkpoint_file

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
# Small and deterministic: 256 synthetic images, batch 64 -> 4 steps per epoch, about a second an epoch.
SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "model=resnet20",
         "trainer.batch_size=64", "trainer.epochs=3", "schedule=cosine", "trainer.device=cpu",
         "trainer.progress_bar=false", "trainer.deterministic=true", "drop=selectscale"]
VOLATILE = {"seconds", "images_per_second"}  # timing fields differ between any two runs


def make_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*SMALL, f"output_dir={run_dir}", *overrides])


def metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def snapshot(run_dir: Path) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "complete"
    result = fit(make_cfg(run_dir))
    return run_dir, result


def test_a_run_leaves_every_output(finished_run):
    run_dir, result = finished_run
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "result.json", "train.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("lr", "drop_strength", "train_loss", "train_top1_error", "test_loss", "test_top1_error",
                "test_top5_error", "test_images"):
        assert all(key in r for r in records), key
    assert records[-1]["test_images"] == 128
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["complete"] is True and saved["schema_version"] == 1 and saved["epochs_completed"] == 3
    assert saved["test_top1_error"] == records[-1]["test_top1_error"]  # the last epoch, never the best
    assert saved["steps_per_epoch"] == 4 and saved["full_epochs"] is True  # 256 images, batch 64
    assert saved["dataset"] == dict(name="synthetic", train_size=256, test_size=128, num_classes=10, verified=False,
                                    evaluated_on="test")
    assert saved["config"]["drop"]["name"] == "selectscale" and saved["world_size"] == 1
    assert saved["code"]["commit"] and saved["torch_version"] == torch.__version__
    assert OmegaConf.load(run_dir / "config.yaml").trainer.epochs == 3


def test_a_complete_run_directory_is_refused_and_left_unchanged(finished_run):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="already holds a complete run"):
        fit(make_cfg(run_dir))
    assert fit(make_cfg(run_dir, "trainer.resume=auto"))["complete"] is True  # nothing left to do
    assert snapshot(run_dir) == before


def test_resuming_with_a_different_config_is_refused(finished_run, tmp_path):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"differs .* in drop.retain_rate"):
        fit(make_cfg(run_dir, "trainer.resume=auto", "drop.retain_rate=0.5"))
    assert snapshot(run_dir) == before


def interrupt_at_step(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Send this process ``signum`` during training step ``step`` (counted from 1 across the run)."""
    original, calls = engine_steps._train_step, {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_steps, "_train_step", step_then_signal)


@pytest.mark.parametrize("stop_step", [6, 8], ids=["mid-epoch", "epoch-boundary"])
def test_interrupted_and_resumed_run_equals_uninterrupted(finished_run, tmp_path, monkeypatch, stop_step):
    reference_dir, _ = finished_run
    run_dir = tmp_path / "interrupted"
    interrupt_at_step(monkeypatch, stop_step)
    with pytest.raises(Preempted, match="trainer.resume=auto"):
        fit(make_cfg(run_dir))
    monkeypatch.undo()
    assert not json.loads((run_dir / "result.json").read_text())["complete"] if stop_step > 4 else True
    with pytest.raises(ConfigError, match="unfinished run"):
        fit(make_cfg(run_dir))
    fit(make_cfg(run_dir, "trainer.resume=auto"))
    assert metrics(run_dir) == metrics(reference_dir)  # exactly, deterministic CPU mode
    reference = read_checkpoint_file(reference_dir / "checkpoint.pt")["model"]
    resumed = read_checkpoint_file(run_dir / "checkpoint.pt")["model"]
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "nan"
    original, calls = engine_steps.F.cross_entropy, {"n": 0}

    def poisoned(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 6 else loss  # training step 6: epoch 2, step 2

    monkeypatch.setattr(engine_steps.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 2"):
        fit(make_cfg(run_dir, "trainer.eval_every=5"))
    state = load_checkpoint(run_dir)
    assert state is not None and state["epoch"] == 1 and state["next_batch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_linear_curriculum_ramps_the_drop_strength(tmp_path):
    run_dir = tmp_path / "curriculum"
    fit(make_cfg(run_dir, "curriculum=linear", "trainer.epochs=2", "drop=spatial_dropout"))
    assert [r["drop_strength"] for r in metrics(run_dir)] == [0.0, 0.5]


def test_fidelity_switches_act_in_a_run_and_result_json_records_them(tmp_path):
    run_dir = tmp_path / "switches"
    result = fit(make_cfg(run_dir, "trainer.epochs=2", "curriculum=exponential", "curriculum.gamma=0.1",
                          "schedule.warmup_steps=5", "dataset.padding_mode=reflect", "drop.rounding=floor",
                          "model.drop_after_stem=true"))
    records = metrics(run_dir)  # lr and strength of each epoch's first step; 4 steps an epoch
    assert [r["lr"] for r in records] == [0.01, 0.01]  # steps 0 and 4: both inside the 5-step warm-up
    assert [r["drop_strength"] for r in records] == pytest.approx([0.0, 1 - math.exp(-0.4)])
    config = result["config"]
    assert (config["drop"]["rounding"], config["dataset"]["padding_mode"], config["model"]["drop_after_stem"]) == (
        "floor", "reflect", True)
    assert (config["curriculum"]["name"], config["curriculum"]["gamma"], config["schedule"]["warmup_steps"]) == (
        "exponential", 0.1, 5)
    # TensorBoard's HParams tab: the settings with the final errors, in the run's own event folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert events.PluginTagToContent("hparams") and "hparam/test_top1_error" in events.Tags()["scalars"]
    assert events.Scalars("hparam/test_top1_error")[0].value == pytest.approx(result["test_top1_error"])


def test_an_unwritable_run_directory_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        fit(make_cfg(blocker / "run"))


def test_a_second_process_on_the_same_run_directory_is_refused_naming_the_holder(tmp_path):
    """Issue 13: one writer per run directory. The lock is a flock: a second open file (here, in this process)
    conflicts as another process would; the run directory is left exactly as it was."""
    from selectscale.runs.lock import LOCK_FILE, RunDirLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunDirLock(run_dir):
        before = snapshot(run_dir)
        with pytest.raises(ConfigError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            fit(make_cfg(run_dir, "trainer.epochs=1"))
        assert snapshot(run_dir) == before
    assert not (run_dir / LOCK_FILE).exists()  # released and removed
    fit(make_cfg(run_dir, "trainer.epochs=1"))  # free again: the run goes ahead
    assert not (run_dir / LOCK_FILE).exists() and (run_dir / "result.json").exists()


def test_a_killed_holder_leaves_no_lock(tmp_path):
    import subprocess
    import sys

    from selectscale.runs.lock import LOCK_FILE, RunDirLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = ("import sys, time; from pathlib import Path; from selectscale.runs.lock import RunDirLock; "
            f"RunDirLock(Path({str(run_dir)!r})).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        RunDirLock(run_dir).acquire()
    holder.kill()
    holder.wait()
    assert (run_dir / LOCK_FILE).exists()  # the file stays after SIGKILL, the lock does not
    RunDirLock(run_dir).acquire().release()


def interrupted_run(run_dir: Path, *overrides: str) -> None:
    """A 2-epoch run stopped by SIGTERM at step 6 (epoch 2, 4 steps an epoch): checkpoint and config.yaml."""
    patch = pytest.MonkeyPatch()
    interrupt_at_step(patch, 6)
    try:
        with pytest.raises(Preempted):
            fit(make_cfg(run_dir, "trainer.epochs=2", *overrides))
    finally:
        patch.undo()


def test_resume_without_config_yaml_still_refuses_other_settings(tmp_path):
    """Issue 13: the checkpoint carries its settings, so a lost config.yaml cannot let lr 0.05 finish a 0.1 run."""
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    (run_dir / "config.yaml").unlink()
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"schedule.lr=0.05 \(saved: 0.1\)"):
        fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto", "schedule.lr=0.05"))
    assert snapshot(run_dir) == before
    fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))  # the same settings resume
    assert json.loads((run_dir / "result.json").read_text())["complete"] is True


@pytest.mark.parametrize("content, message", [("a: [1, 2\n", "is unreadable"), ("- 1\n- 2\n", "holds no settings")])
def test_a_damaged_config_yaml_is_one_line_naming_it(tmp_path, content, message):
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    (run_dir / "config.yaml").write_text(content)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=message) as raised:
        fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))
    assert "config.yaml" in str(raised.value) and "\n" not in str(raised.value)
    assert snapshot(run_dir) == before


def test_a_checkpoint_of_another_model_or_without_keys_is_refused_in_one_line(tmp_path):
    from selectscale.models import create_model
    from selectscale.runs.checkpoint import save_checkpoint

    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    state = load_checkpoint(run_dir)
    state["model"] = create_model("resnet8", 10).state_dict()
    save_checkpoint(state, run_dir)
    with pytest.raises(ConfigError, match="does not fit this model") as raised:
        fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))
    assert "\n" not in str(raised.value)
    del state["optimizer"], state["cpu_rng"]
    save_checkpoint(state, run_dir)
    with pytest.raises(ConfigError, match="lacks optimizer, cpu_rng"):
        fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))


def test_a_damaged_last_metrics_line_is_dropped_and_the_run_resumes(tmp_path):
    """A kill mid-write leaves half a line at the end of metrics.jsonl: safe to drop (that epoch is redone)."""
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "train_lo')
    fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))
    assert [record["epoch"] for record in metrics(run_dir)] == [1, 2]


@pytest.mark.parametrize("damage, message", [
    ("metrics-middle", "metrics.jsonl line 1 is damaged"),
    ("result-array", "result.json is unreadable (not a JSON object but a list)"),
    ("tensorboard-file", "tensorboard is a file where the run keeps its own folder"),
])
def test_damaged_run_files_are_one_line_and_change_nothing(tmp_path, damage, message):
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    if damage == "metrics-middle":
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        (run_dir / "metrics.jsonl").write_text("\n".join(["garbage", *lines]) + "\n")
    elif damage == "result-array":
        (run_dir / "result.json").write_text("[]")
    else:
        import shutil

        shutil.rmtree(run_dir / "tensorboard")
        (run_dir / "tensorboard").write_text("not a folder")
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        fit(make_cfg(run_dir, "trainer.epochs=2", "trainer.resume=auto"))
    assert "\n" not in str(raised.value) and snapshot(run_dir) == before


def test_sigusr2_checkpoints_then_hands_the_signal_on_and_the_requeued_job_resumes(finished_run, tmp_path,
                                                                                    monkeypatch):
    """SLURM's warning signal under submitit (issue 13), without a cluster: SIGUSR2 mid-training writes a
    checkpoint, then the handler that was installed before ours (submitit's requeue, here a recorder) runs;
    the requeued job (SLURM_RESTART_COUNT=1, same command, no trainer.resume) resumes by itself and ends
    exactly as the uninterrupted run."""
    reference_dir, _ = finished_run
    run_dir = tmp_path / "run"
    forwarded = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: forwarded.append(signum))
    try:
        interrupt_at_step(monkeypatch, 6, signal.SIGUSR2)
        with pytest.raises(Preempted, match="stopped by SIGUSR2") as raised:
            fit(make_cfg(run_dir))
        monkeypatch.undo()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert forwarded == [signal.SIGUSR2] and load_checkpoint(run_dir) is not None
    assert f"trainer.resume=auto output_dir={run_dir}" in str(raised.value)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    fit(make_cfg(run_dir))  # trainer.resume is "never" on the command line: the requeue resumes anyway
    assert metrics(run_dir) == metrics(reference_dir)


def test_progress_lines_without_a_terminal(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(engine_steps, "PROGRESS_EVERY_S", 0.0)  # every step, instead of every minute
    caplog.set_level(logging.INFO, logger="selectscale")  # train.py's Hydra logging config does this
    run_dir = tmp_path / "progress"
    fit(make_cfg(run_dir, "trainer.epochs=1", "trainer.progress_bar=true"))  # pytest's stderr is not a terminal
    lines = [message for message in caplog.messages if "img/s | loss" in message]
    assert len(lines) == 4 and "epoch 1 step 4/4" in lines[-1] and "epoch left ~0 s" in lines[-1]


@pytest.mark.parametrize("cpu_amp", [True, False])
def test_cpu_amp_without_native_bf16_warns_once(tmp_path, monkeypatch, caplog, cpu_amp):
    import importlib

    engine_fit = importlib.import_module("selectscale.engine.trainer")  # the module (the package exports fit())
    real = engine_fit.environment
    monkeypatch.setattr(engine_fit, "environment", lambda: {**real(), "cpu_native_bf16": False, "cpu_model": "OldCPU"})
    caplog.set_level(logging.WARNING, logger="selectscale")
    fit(make_cfg(tmp_path / "amp", "trainer.epochs=1", "model=resnet8", "dataset.train_size=64",
                 "dataset.test_size=64", f"trainer.cpu_amp={str(cpu_amp).lower()}"))
    warnings = [m for m in caplog.messages if "without native bf16 (OldCPU)" in m]
    assert len(warnings) == (1 if cpu_amp else 0)
