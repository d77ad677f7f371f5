"""Loggers as a config group (issue 36): TensorBoard and CSV files read back by their own libraries, the default
unchanged, several at once, per-step scalars at an interval (and no host-device sync between), a resume that
drops stale points, rank 0 only, the checks of names and options, a logger choice that never makes two runs
different settings, and the documented new logger (one module plus one YAML). W&B and MLflow:
tests/test_loggers_extras.py."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from logger_helpers import (
    EPOCH_TAGS,
    REPO,
    STEP_TAGS,
    TINY,
    expected_steps,
    make_cfg,
    read_csv,
    run,
    tensorboard_scalars,
)
from omegaconf import OmegaConf

from selectscale.engine import ConfigError
from selectscale.engine import steps as engine_steps
from selectscale.engine.config import validate
from selectscale.loggers import LOGGERS, TAGS
from selectscale.report.collect import setting_of
from selectscale.runs.directory import config_differences


@pytest.fixture
def steps_seen(monkeypatch):
    """How often a training step's loss was read on the host: float(loss), the only sync a logged step adds."""
    seen: dict[str, list] = {"reads": []}
    original = engine_steps._train_step

    class CountedLoss:
        def __init__(self, loss):
            self.loss = loss

        def __float__(self):
            seen["reads"].append(1)
            return float(self.loss)

        def detach(self):
            return self.loss.detach()

    def counted(*args, **kwargs):
        return CountedLoss(original(*args, **kwargs))

    monkeypatch.setattr(engine_steps, "_train_step", counted)
    return seen



# --- the default: what every run wrote before ---------------------------------------------------------------------

def test_the_default_is_tensorboard_with_the_same_tags_and_nothing_else(tmp_path, steps_seen):
    assert OmegaConf.to_container(make_cfg().logger) == {"log_every_n_steps": 0, "tensorboard": {}}
    run_dir, records, result = run(tmp_path)
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert set(scalars) == set(EPOCH_TAGS) | {f"hparam/{key}" for key in ("test_top1_error", "test_top5_error",
                                                                          "train_top1_error", "test_loss")}
    for tag, key in EPOCH_TAGS.items():
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([r[key] for r in records], rel=1e-6), tag
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["tensorboard"]  # no csv/, wandb/, mlflow/
    assert all(p.is_file() for p in (run_dir / "tensorboard").iterdir())  # no steps/ folder
    assert steps_seen["reads"] == []  # no per-step logging: no step's loss read on the host
    assert result["config"]["logger"] == {"log_every_n_steps": 0, "tensorboard": {}}


# --- each logger read back by its own library ---------------------------------------------------------------------

def test_tensorboard_per_step_scalars_at_an_interval(tmp_path, steps_seen):
    run_dir, records, _ = run(tmp_path, "logger.log_every_n_steps=4")
    steps = tensorboard_scalars(run_dir / "tensorboard" / "steps")
    assert set(steps) == set(STEP_TAGS)
    for tag in STEP_TAGS:
        assert [step for step, _ in steps[tag]] == [0, 4] == expected_steps(4), tag  # ceil(6 / 4) points
    lr = dict(steps["train_step/lr"])
    assert lr[0] == pytest.approx(records[0]["lr"])  # step 0 is epoch 1's first step: metrics.jsonl's lr
    assert len(steps_seen["reads"]) == 2  # float(loss) on the 2 logged steps only: no sync on the other 4
    assert set(tensorboard_scalars(run_dir / "tensorboard")) >= set(EPOCH_TAGS)  # the epoch curves unchanged


def test_csv_writes_epochs_and_steps_that_the_csv_module_reads_back(tmp_path):
    run_dir, records, _ = run(tmp_path, "logger=csv", "logger.log_every_n_steps=5")
    assert not (run_dir / "tensorboard").exists()
    columns, rows = read_csv(run_dir / "csv" / "metrics.csv")
    assert columns == ["epoch", *EPOCH_TAGS.values()]
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    for row, record in zip(rows, records, strict=True):
        for key in EPOCH_TAGS.values():
            assert float(row[key]) == record[key], key  # the same float, written with repr
    columns, rows = read_csv(run_dir / "csv" / "steps.csv")
    assert columns == ["step", *STEP_TAGS.values()]
    assert [int(row["step"]) for row in rows] == [0, 5] == expected_steps(5)
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)


def test_a_list_of_loggers_writes_all_of_them(tmp_path):
    listed = OmegaConf.to_container(make_cfg("logger=[tensorboard,csv]").logger)
    assert listed == OmegaConf.to_container(make_cfg("logger=many").logger)  # the preset is the same pair
    assert list(listed) == ["log_every_n_steps", "tensorboard", "csv"]
    run_dir, records, _ = run(tmp_path, "logger=[tensorboard,csv]", "logger.log_every_n_steps=1")
    assert [step for step, _ in tensorboard_scalars(run_dir / "tensorboard" / "steps")["train_step/loss"]] == \
        expected_steps(1)
    assert [int(row["step"]) for row in read_csv(run_dir / "csv" / "steps.csv")[1]] == expected_steps(1)
    assert [int(row["epoch"]) for row in read_csv(run_dir / "csv" / "metrics.csv")[1]] == [1, 2]
    assert [step for step, _ in tensorboard_scalars(run_dir / "tensorboard")["train/loss"]] == [1, 2]


def test_a_resumed_run_drops_the_points_logged_after_its_checkpoint(tmp_path, monkeypatch):
    """A crash at step 4 (epoch 2) leaves steps 3 and 4 logged after the epoch-1 checkpoint: the resumed run logs
    them again, and each logger shows every step and epoch once (CSV drops the rows, TensorBoard purges)."""
    from selectscale.engine.records import MetricsLogger

    original = MetricsLogger.log_step

    def crash_at_4(self, step, scalars):
        original(self, step, scalars)
        if step == 4:
            raise RuntimeError("crash after logging step 4")

    monkeypatch.setattr(MetricsLogger, "log_step", crash_at_4)
    overrides = ("logger=[tensorboard,csv]", "logger.log_every_n_steps=1")
    with pytest.raises(RuntimeError, match="crash after logging step 4"):
        run(tmp_path, *overrides)
    run_dir = tmp_path / "run"
    assert [int(row["step"]) for row in read_csv(run_dir / "csv" / "steps.csv")[1]] == [0, 1, 2, 3, 4]
    monkeypatch.setattr(MetricsLogger, "log_step", original)
    # TensorBoard reads a folder's event files in name order (seconds since the epoch, host, pid, a per-process
    # counter compared as text): a real resume is a later process, so its files sort after the first run's. Within
    # one process and one second they could sort by the counter's text ("10" < "9"): resume a second later.
    time.sleep(1.1)
    run(tmp_path, *overrides, "trainer.resume=auto")
    assert [int(row["step"]) for row in read_csv(run_dir / "csv" / "steps.csv")[1]] == expected_steps(1)
    assert [int(row["epoch"]) for row in read_csv(run_dir / "csv" / "metrics.csv")[1]] == [1, 2]
    steps = tensorboard_scalars(run_dir / "tensorboard" / "steps")["train_step/loss"]
    assert [step for step, _ in steps] == expected_steps(1)
    assert [step for step, _ in tensorboard_scalars(run_dir / "tensorboard")["train/loss"]] == [1, 2]


def test_only_rank_0_builds_loggers(tmp_path):
    """Every other rank's MetricsLogger (enabled=False) builds no logger and writes nothing, per step or epoch."""
    from selectscale.engine.records import MetricsLogger

    other_rank = MetricsLogger(tmp_path, enabled=False, loggers={"tensorboard": {}, "csv": {}, "log_every_n_steps": 1})
    assert other_rank.loggers == []
    other_rank.log_step(0, {"train_loss": 1.0, "lr": 0.1, "drop_strength": 0.0})
    other_rank.log_epoch({"epoch": 1})
    other_rank.close()
    assert not list(tmp_path.iterdir())
    main = MetricsLogger(tmp_path, enabled=True, loggers={"tensorboard": {}, "csv": {}})
    assert [logger.name for logger in main.loggers] == ["tensorboard", "csv"]
    main.close()


def test_none_writes_only_the_run_directorys_own_records(tmp_path, steps_seen):
    run_dir, records, _ = run(tmp_path, "logger=none", "logger.log_every_n_steps=1")
    assert [r["epoch"] for r in records] == [1, 2]
    assert not [p for p in run_dir.iterdir() if p.is_dir()]
    assert steps_seen["reads"] == []  # nothing to log to: the interval costs no sync


@pytest.mark.parametrize("overrides, message", [
    (["+logger.nosuch={}"], "logger.nosuch is invalid: no such logger; use one of csv, mlflow, tensorboard, wandb"),
    (["+logger.tensorboard.flush_secs=3"], "logger.tensorboard.flush_secs=3 is invalid: the tensorboard logger takes "
                                          "no options"),
    (["logger=wandb", "+logger.wandb.projet=x"], "logger.wandb.projet='x' is invalid: the wandb logger takes project"),
    (["logger.log_every_n_steps=-1"], "logger.log_every_n_steps=-1 is invalid: it must be an integer >= 0"),
])
def test_unknown_loggers_options_and_intervals_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        validate(make_cfg(*overrides))
    assert "\n" not in str(raised.value)


# --- a logger is not part of the experiment ------------------------------------------------------------------------

def test_the_logger_choice_never_makes_runs_different_settings():
    tensorboard = make_cfg()
    other = make_cfg("logger=[csv,mlflow]", "logger.log_every_n_steps=10", "logger.mlflow.experiment=x")
    assert config_differences(tensorboard, other) == []  # a resume may switch loggers
    assert setting_of(OmegaConf.to_container(tensorboard, resolve=True)) == \
        setting_of(OmegaConf.to_container(other, resolve=True))  # the tables group them
    old = OmegaConf.to_container(tensorboard, resolve=True)
    del old["logger"]  # a run recorded before the logger group
    assert config_differences(OmegaConf.create(old), other) == []
    assert setting_of(old) == setting_of(OmegaConf.to_container(other, resolve=True))


def test_every_registered_logger_has_its_yaml_and_every_yaml_a_logger():
    folder = REPO / "configs" / "logger"
    for name in LOGGERS:
        node = OmegaConf.load(folder / f"{name}.yaml")
        assert list(node) == [name], name
    presets = {"none", "many"}  # choices of no logger and of several
    assert {p.stem for p in folder.glob("*.yaml")} - presets == set(LOGGERS)
    assert set(TAGS["epoch"].values()) == set(EPOCH_TAGS) and set(TAGS["step"].values()) == set(STEP_TAGS)


# --- a new logger is one module plus one YAML (the example of docs/architecture.md) ---------------------------------

def docs_example() -> dict[str, str]:
    """The files of docs/architecture.md's "Adding a logger" example: fenced blocks whose first line names the path."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Adding a logger", 1)[1]
    blocks = re.findall(r"```\w*\n# (\S+)\n(.*?)```", section, flags=re.S)
    return {path: f"# {path}\n{body}" for path, body in blocks}


def test_the_documented_new_logger_is_one_module_and_one_yaml(tmp_path):
    files = docs_example()
    assert sorted(files) == ["configs/logger/console.yaml", "selectscale/loggers/console.py"]
    copy = tmp_path / "copy"  # a copy of the package with configs/ inside it, as a wheel installs it
    shutil.copytree(REPO / "selectscale", copy / "selectscale", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", copy / "selectscale" / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "train.py", copy / "train.py")
    for path, body in files.items():
        (copy / path.replace("configs/", "selectscale/configs/", 1)).write_text(body)
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "train.py", *TINY, "logger=[csv,console]", "logger.console.prefix=seen",
                           "trainer.epochs=1", f"output_dir={tmp_path}/run"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seen epoch 1:" in done.stdout and "'train_loss'" in done.stdout
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
