"""The optional loggers (issue 36): W&B's offline run folder read back by W&B's own reader, MLflow's local store by
MlflowClient, and either one chosen without its package: one line naming the extra, exit 2, nothing written.
Both packages are in the dev extra (CI installs it); without them their read-back tests are skipped, except under
CI=true (as .ci/run's Slurm tests), where a missing package fails them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from logger_helpers import EPOCH_TAGS, REPO, TINY, expected_steps, run


def require(package: str) -> None:
    """Skip without ``package`` (pip install 'selectscale[PACKAGE]'), or fail under CI=true, which must run it."""
    if importlib.util.find_spec(package) is None:
        message = f"{package} is not installed (pip install 'selectscale[{package}]', or the dev extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true runs these tests", pytrace=False)
        pytest.skip(message)


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of the run's offline .wandb file, as W&B's own reader (wandb leet inspect) parses them."""
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_wandb_offline_run_folder_read_back_by_wandb(tmp_path, monkeypatch):
    require("wandb")
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # W&B's own files: not in the home
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    run_dir, records, result = run(tmp_path, "logger=wandb", "logger.log_every_n_steps=3")
    parsed = wandb_records(run_dir)
    history = [record["history"]["item"] for record in parsed if record["type"] == "history"]
    epochs = [item for item in history if "epoch" in item]
    assert [item["epoch"] for item in epochs] == [1, 2]
    for tag, key in EPOCH_TAGS.items():
        assert [item[tag] for item in epochs] == pytest.approx([r[key] for r in records]), tag
    assert [item["global_step"] for item in history if "global_step" in item] == expected_steps(3)
    header = next(record["run"] for record in parsed if record["type"] == "run")
    assert header["project"] == "selectscale" and header["display_name"] == "run"
    assert header["telemetry"]["feature"]["offline"] is True
    config = {}
    for record in parsed:
        if record["type"] == "config":
            config.update(record["config"]["update"])
    assert config["model.name"] == "resnet8" and config["drop.name"] == "selectscale"
    assert not any(key.startswith("logger.") for key in config)  # the loggers are not a setting
    assert any(record["type"] == "exit" and record["exit"].get("exit_code", 0) == 0 for record in parsed)


def test_mlflow_local_store_read_back_by_mlflow_client(tmp_path, monkeypatch):
    require("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir, records, result = run(tmp_path, "logger=mlflow", "logger.log_every_n_steps=2")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlflow").resolve().as_uri())
    experiment = client.get_experiment_by_name("selectscale")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    for tag, key in EPOCH_TAGS.items():
        history = client.get_metric_history(found.info.run_id, tag)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r[key])) for r in records], tag
    steps = client.get_metric_history(found.info.run_id, "train_step/loss")
    assert [m.step for m in steps] == expected_steps(2)
    params = found.data.params
    assert params["model.name"] == "resnet8" and params["trainer.epochs"] == "2"
    assert not any(key.startswith("logger.") for key in params)
    assert found.data.metrics["hparam/test_top1_error"] == pytest.approx(result["test_top1_error"])


# --- refusals ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_a_missing_package_is_one_line_naming_the_extra_and_writes_nothing(tmp_path, package):
    code = (f"import sys, runpy; sys.modules[{package!r}] = None; sys.argv = ['train.py', *sys.argv[1:]]; "
            f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, *TINY, f"logger={package}", f"hydra.run.dir={tmp_path}/run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"pip install 'selectscale[{package}]'" in last, last
    assert not (tmp_path / "run").exists()


