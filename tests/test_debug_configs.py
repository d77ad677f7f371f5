"""The debug= group (issue 36): each shipped option composed from the real configs and run (synthetic data, resnet8,
seconds each): debug=quick, debug=overfit_batch (the loss on one batch goes towards 0), debug=profile (a trace)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from logger_helpers import epoch_summaries
from omegaconf import OmegaConf

from selectscale.data.loader import DeviceLoader
from selectscale.data.overfit import RepeatedBatch
from selectscale.engine import ConfigError, fit, register_configs, validate
from selectscale.runs.directory import differing_settings

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
# What every debug run here shares: no trainer.epochs or max_steps_per_epoch (the debug option sets them).
TINY = ["dataset=synthetic", "dataset.train_size=512", "dataset.test_size=64", "model=resnet8",
        "trainer.batch_size=16", "trainer.device=cpu", "trainer.deterministic=true", "logger=none"]


def make_cfg(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY, *overrides], return_hydra_config=hydra_config)


def epochs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("option", ["quick", "overfit_batch", "profile"])
def test_each_option_composes_without_plus_and_writes_to_a_throwaway_folder(option):
    cfg = make_cfg(f"debug={option}", hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"].startswith("runs/debug/")
    assert cfg.hydra.runtime.choices.debug == option
    validate(make_cfg(f"debug={option}"))
    assert make_cfg(hydra_config=True).hydra.runtime.choices.debug is None  # no debug option: nothing changes
    assert make_cfg().trainer.epochs == 200 and not make_cfg().dataset.overfit_batch


def test_quick_is_two_short_epochs_with_an_eta(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="selectscale")
    run_dir = tmp_path / "quick"
    result = fit(make_cfg("debug=quick", f"output_dir={run_dir}"))
    assert result["complete"] and result["epochs_completed"] == 2
    assert result["steps_per_epoch"] == 20 and result["full_epochs"] is False  # 512 / 16 = 32 steps, capped
    assert [r["epoch"] for r in epochs(run_dir)] == [1, 2]
    summaries = epoch_summaries(caplog.messages)
    assert len(summaries) == 2
    assert "left (at " in summaries[0] and "left" not in summaries[-1]  # an ETA after each epoch but the last


def test_the_overfit_batch_loader_repeats_one_unaugmented_batch():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    loader = DeviceLoader(images, labels, 16, train=True, seed=0, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu")
    repeated = RepeatedBatch(loader)
    batches = list(repeated)
    assert len(batches) == len(loader) == 4 and repeated.num_samples == 64
    assert all(torch.equal(b[0], batches[0][0]) and torch.equal(b[1], batches[0][1]) for b in batches)
    loader.set_epoch(0)
    indices = loader.epoch_indices()[:16]
    assert torch.equal(batches[0][1], labels[indices])
    assert torch.equal(batches[0][0], loader.normalize(images[indices]))  # the images themselves: no crop or flip
    repeated.set_epoch(3, start_batch=3)
    assert len(list(repeated)) == 1


def test_overfit_batch_drives_the_training_loss_towards_zero(tmp_path):
    run_dir = tmp_path / "overfit"
    result = fit(make_cfg("debug=overfit_batch", f"output_dir={run_dir}"))
    losses = [r["train_loss"] for r in epochs(run_dir)]
    assert len(losses) == 10 and result["dataset"]["train_size"] == 16
    assert losses[0] > 0.5 and losses[-1] < 0.05 * losses[0], losses  # 100 steps on the same 16 images (the whole
    # split instead: 2.47 -> 1.01, measured)
    assert epochs(run_dir)[-1]["train_top1_error"] == 0.0


def test_overfit_batch_is_refused_for_imagenet(tmp_path):
    with pytest.raises(ConfigError, match="dataset.overfit_batch"):
        validate(make_cfg("dataset=imagenet", "model=resnet50", "dataset.overfit_batch=true",
                          f"dataset.root={tmp_path}"))


def test_profile_writes_a_trace_and_prints_the_table_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="selectscale")
    run_dir = tmp_path / "profile"
    result = fit(make_cfg("debug=profile", f"output_dir={run_dir}"))
    assert result["complete"] and result["steps_per_epoch"] == 8
    traces = list((run_dir / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1 and json.loads(traces[0].read_text())["traceEvents"]
    tables = [m for m in caplog.messages if m.startswith("profile of 5 training steps")]
    assert len(tables) == 1 and "aten::convolution" in tables[0] and "Self CPU" in tables[0]


def test_profile_needs_enough_steps_and_is_no_setting(tmp_path):
    with pytest.raises(ConfigError, match="trainer.profile_steps=5"):
        validate(make_cfg("debug=profile", "trainer.max_steps_per_epoch=4"))
    with pytest.raises(ConfigError, match="trainer.profile_steps=-1"):
        validate(make_cfg("trainer.profile_steps=-1"))
    plain, profiled = make_cfg("trainer.epochs=1"), make_cfg("trainer.epochs=1", "trainer.profile_steps=3")
    assert differing_settings(plain, profiled) == []  # a profiled run resumes and tables like any other
    assert [key for key, *_ in differing_settings(plain, make_cfg("trainer.epochs=1", "dataset.overfit_batch=true"))] \
        == ["dataset.overfit_batch"]
