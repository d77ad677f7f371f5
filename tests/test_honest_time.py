"""Honest time and schedule (issue 36): the ETA after each epoch and in the run queue, the one note when a run takes
hours, milestones of shortened runs, the images/s of a resumed epoch, and the one line for unofficial CIFAR files."""

import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from logger_helpers import epoch_summaries
from omegaconf import OmegaConf

from selectscale.engine import eta, fit, register_configs
from selectscale.engine import steps as engine_steps
from selectscale.engine.eta import EpochClock, format_duration, queue_eta
from selectscale.engine.schedule import learning_rate
from selectscale.engine.signals import Preempted
from selectscale.runqueue import Job, run_jobs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
TINY = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32", "model=resnet8", "trainer.batch_size=32",
        "trainer.device=cpu", "trainer.deterministic=true", "logger=none", "trainer.progress_bar=false"]


def make_cfg(*overrides: str, tiny: bool = True):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*(TINY if tiny else []), *overrides])


def test_durations_read_as_an_estimate():
    assert [format_duration(s) for s in (0, 41.6, 60, 749, 3600, 7530, -5)] == \
        ["~0 s", "~42 s", "~1 min", "~12 min", "~1 h 00 min", "~2 h 06 min", "~0 s"]


def test_the_epoch_clock_estimates_from_measured_epochs_and_notes_long_runs_once():
    clock = EpochClock()
    line, note = clock.after_epoch(1, 200, 36.0)
    assert line == "~1 h 59 min left (at 36.0 s/epoch)"  # 199 epochs x 36 s
    assert note is not None and "200 epochs at 36 s/epoch take ~2 h 00 min" in note
    assert "trainer.epochs=" in note and "debug=quick" in note
    line, note = clock.after_epoch(2, 200, 44.0)
    assert line == "~2 h 12 min left (at 40.0 s/epoch)" and note is None  # the mean of both; the note once
    assert clock.after_epoch(200, 200, 40.0) == (None, None)  # nothing left on the last epoch
    assert EpochClock().after_epoch(1, 20, 36.0)[1] is None  # 12 minutes in all: no note
    resumed = EpochClock(skip_first=True)
    assert resumed.after_epoch(5, 200, 3.0) == (None, None)  # part of an epoch is no measure of one
    assert resumed.after_epoch(6, 200, 36.0)[0] == "~1 h 56 min left (at 36.0 s/epoch)"


def test_the_queue_estimate_shares_the_mean_run_between_the_slots():
    assert queue_eta([], [10.0], 3, 2) is None  # nothing finished yet: no estimate
    assert queue_eta([600.0], [], 0, 2) is None  # nothing left
    # 3 pending x 600 s + a running job 200 s into its 600: 2200 s of work, 2 at a time: 1100 s
    assert queue_eta([500.0, 700.0], [200.0], 3, 2) == "~18 min left for 4 runs (at 10 min per finished run)"


def test_the_queue_prints_its_eta_after_each_finished_job(tmp_path):
    jobs = [Job(name, (sys.executable, "-c", "import time; time.sleep(0.2)"), tmp_path / f"{name}.log")
            for name in "abc"]
    lines: list[str] = []
    assert run_jobs(jobs, 1, tmp_path, echo=lines.append) == []
    etas = [line for line in lines if line.startswith("[eta]")]
    assert len(etas) == 2 and "left for 2 runs" in etas[0] and "left for 1 run " in etas[1]  # none after the last


def test_a_run_logs_its_eta_after_each_epoch_and_the_long_run_note_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(eta, "LONG_RUN_S", 0.0)  # every run "takes hours"
    caplog.set_level(logging.INFO, logger="selectscale")
    fit(make_cfg("trainer.epochs=3", f"output_dir={tmp_path / 'run'}"))
    summaries = epoch_summaries(caplog.messages)
    assert len(summaries) == 3 and all(" s/epoch)" in m for m in summaries[:2]) and "left" not in summaries[2]
    assert summaries[0].startswith("epoch   1/3 ") and " left (at " in summaries[0]
    notes = [m for m in caplog.messages if "debug=quick" in m]
    assert len(notes) == 1 and "3 epochs at" in notes[0]
    assert "left (at" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_no_milestone_falls_before_the_end_of_epoch_1(dataset):
    cfg = make_cfg(f"dataset={dataset}", "trainer.epochs=1", tiny=False)
    OmegaConf.resolve(cfg)
    assert min(cfg.schedule.milestone_epochs) == 1
    schedule = OmegaConf.to_object(cfg.schedule)
    assert [learning_rate(schedule, p, 1, 10) for p in (0.0, 0.5, 0.9)] == [0.1] * 3  # was 0.02 (0.01) throughout


def test_the_paper_schedules_are_unchanged():
    cifar = make_cfg(tiny=False)
    OmegaConf.resolve(cifar)
    assert list(cifar.schedule.milestone_epochs) == [60, 120, 160]
    schedule = OmegaConf.to_object(cifar.schedule)
    at = {epoch: learning_rate(schedule, epoch + 0.5, 200, 391) for epoch in (0, 59, 60, 119, 120, 159, 160, 199)}
    assert at == {0: 0.1, 59: 0.1, 60: 0.1 * 0.2, 119: 0.1 * 0.2, 120: 0.1 * 0.2**2, 159: 0.1 * 0.2**2,
                  160: 0.1 * 0.2**3, 199: 0.1 * 0.2**3}
    imagenet = make_cfg("dataset=imagenet", tiny=False)
    OmegaConf.resolve(imagenet)
    assert list(imagenet.schedule.milestone_epochs) == [30, 60, 90, 100]
    two = make_cfg("trainer.epochs=2", tiny=False)
    OmegaConf.resolve(two)
    assert list(two.schedule.milestone_epochs) == [1, 1, 2]  # as before: only 1-epoch runs changed


def test_a_resumed_epoch_counts_only_the_images_trained_since_the_resume(tmp_path, monkeypatch):
    original, calls = engine_steps._train_step, {"n": 0}

    def step_then_signal(*args, **kwargs):  # SIGTERM during the 2nd of 4 steps: the checkpoint says batch 2
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_steps, "_train_step", step_then_signal)
    run_dir = tmp_path / "resumed"
    with pytest.raises(Preempted):
        fit(make_cfg("trainer.epochs=1", f"output_dir={run_dir}"))
    monkeypatch.undo()
    fit(make_cfg("trainer.epochs=1", f"output_dir={run_dir}", "trainer.resume=auto"))
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["images_per_second"] * record["seconds"] == pytest.approx(64)  # batches 3 and 4, not all 128


def test_unofficial_cifar_files_are_one_log_line(tmp_path, write_tiny_cifar10, caplog, recwarn):
    write_tiny_cifar10(tmp_path, train_counts=(40, 40, 40, 40, 40), test_count=20)
    caplog.set_level(logging.INFO, logger="selectscale")
    fit(make_cfg("dataset=cifar10", f"dataset.root={tmp_path}", "trainer.epochs=1", "trainer.max_steps_per_epoch=1",
                 f"output_dir={tmp_path / 'run'}"))
    lines = [m for m in caplog.messages if "not the official ones" in m]
    assert len(lines) == 1 and "\n" not in lines[0] and "CIFAR-10: 7 file(s)" in lines[0]
    assert not [w for w in recwarn if "official" in str(w.message)]  # no UserWarning with its source line
