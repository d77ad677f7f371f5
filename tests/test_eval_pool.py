"""Issue 37, item 1: the evaluation pool (selectscale/data/pool.py, engine/pool.py, selectscale-evaluate --pool)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from selectscale.data import build_dataset
from selectscale.data.holdout import class_balanced_holdout
from selectscale.data.pool import NoPool, unused_indices
from selectscale.engine import fit, register_configs
from selectscale.engine.config import validate
from selectscale.errors import ConfigError
from selectscale.evaluate import main as evaluate_main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# 1,000 synthetic training images (~100 a class), 5 a class trained on: the pool is what neither trains nor is in
# the 20% validation split.
SMALL = ["dataset=synthetic", "dataset.train_size=1000", "dataset.test_size=120", "model=resnet8",
         "trainer.batch_size=25", "trainer.epochs=2", "trainer.device=cpu", "trainer.progress_bar=false",
         "trainer.deterministic=true", "drop=selectscale", "dataset.train_per_class=5", "logger=none"]
POOL = ["dataset.eval_pool=true", "dataset.selection_fraction=0.2"]


def make_cfg(run_dir: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*SMALL, f"output_dir={run_dir}", *overrides])


def test_the_pool_is_class_balanced_and_disjoint_from_the_trained_images_and_the_rates_validation_split():
    labels = torch.arange(4).repeat_interleave(torch.tensor([30, 33, 31, 40]))
    pool = unused_indices(labels, 0.2, seed=0, per_class=5)
    trained, _ = class_balanced_holdout(labels, 0.0, seed=0, per_class=5)  # what a final run trains on
    _, chose_rates = class_balanced_holdout(labels, 0.2, seed=0, per_class=5)  # the selection grid's split
    # per class 30 - round(6.0) - 5 = 19 is the smallest middle: every class gives 19
    assert torch.bincount(labels[pool]).tolist() == [19] * 4
    assert not set(pool.tolist()) & set(trained.tolist()) and not set(pool.tolist()) & set(chose_rates.tolist())
    assert torch.equal(pool, unused_indices(labels, 0.2, seed=0, per_class=5))  # fixed by its seed
    assert not torch.equal(pool, unused_indices(labels, 0.2, seed=1, per_class=5))
    # without a selection split the validation images are unused too: the pool grows by them
    assert unused_indices(labels, 0.0, seed=0, per_class=5).numel() == 4 * 25


@pytest.mark.parametrize("fraction, per_class, message", [(0.2, 0, "train_per_class > 0"),
                                                           (0.2, 24, "no training image left"),
                                                           (1.0, 5, "must be in")])
def test_no_pool_is_a_clear_error(fraction, per_class, message):
    labels = torch.arange(4).repeat_interleave(30)
    with pytest.raises(NoPool, match=message):
        unused_indices(labels, fraction, seed=0, per_class=per_class)


def test_the_pool_does_not_change_what_a_run_trains_or_tests_on():
    plain = build_dataset("synthetic", num_train=1000, num_test=120, train_per_class=5)
    pooled = build_dataset("synthetic", num_train=1000, num_test=120, train_per_class=5, eval_pool=True,
                           selection_fraction=0.2)
    assert plain.pool is None and len(pooled.pool) > 0
    assert torch.equal(plain.train.images, pooled.train.images) and torch.equal(plain.test.images, pooled.test.images)


@pytest.mark.parametrize("overrides, key", [
    (["dataset.eval_pool=true", "dataset.train_per_class=0"], "dataset.eval_pool"),
    (["dataset.eval_pool=true", "dataset.validation_fraction=0.2"], "dataset.eval_pool"),
    (["dataset.selection_fraction=1.0"], "dataset.selection_fraction"),
])
def test_a_pool_that_cannot_exist_is_refused_in_one_line(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as caught:
        validate(make_cfg(tmp_path / "run", *overrides))
    assert key in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def pooled_runs(tmp_path_factory):
    """The same run trained with and without the pool (2 epochs on synthetic data)."""
    root = tmp_path_factory.mktemp("pool")
    fit(make_cfg(root / "pooled", *POOL))
    fit(make_cfg(root / "plain"))
    return root


def _metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key not in ("seconds", "images_per_second")}
            for record in records]


def test_a_pooled_run_records_the_pool_beside_the_test_error_and_trains_as_without_it(pooled_runs):
    pooled = json.loads((pooled_runs / "pooled" / "result.json").read_text())
    plain = json.loads((pooled_runs / "plain" / "result.json").read_text())
    pool = pooled["eval_pool"]
    assert "eval_pool" not in plain and _metrics(pooled_runs / "pooled") == _metrics(pooled_runs / "plain")
    assert pool["test_images"] == pooled["dataset"]["test_size"] == 120
    assert pool["test_top1_error"] == pooled["test_top1_error"]  # the same final network
    assert pool["images"] == pool["unused_images"] + 120 and pool["unused_images"] == 10 * pool["unused_per_class"]
    assert pool["errors"] == pool["unused_errors"] + pool["test_errors"]
    assert pool["top1_error"] == pytest.approx(pool["errors"] / pool["images"], abs=1e-12)
    assert pool["unused_errors"] == round(pool["unused_top1_error"] * pool["unused_images"])
    assert (pool["selection_fraction"], pool["split_seed"]) == (0.2, 0)


def test_evaluate_scores_a_finished_run_on_the_pool_as_training_did_and_records_it_once(pooled_runs, capsys):
    pooled, plain = pooled_runs / "pooled", pooled_runs / "plain"
    recorded = json.loads((pooled / "result.json").read_text())["eval_pool"]
    assert evaluate_main([str(pooled), "--pool", "dataset.selection_fraction=0.2", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert {key: scored[key] for key in recorded} == recorded and scored["recorded"] is False
    before = (pooled / "result.json").read_bytes()
    assert evaluate_main([str(pooled), "--pool", "dataset.selection_fraction=0.1", "--record"]) == 2
    assert "never overwritten" in capsys.readouterr().err and (pooled / "result.json").read_bytes() == before
    # a run trained without the pool gets it from its checkpoint, without retraining
    assert evaluate_main([str(plain), "--pool", "dataset.selection_fraction=0.2", "--record"]) == 0
    assert "recorded in result.json" in capsys.readouterr().out
    added = json.loads((plain / "result.json").read_text())["eval_pool"]
    assert added["images"] == recorded["images"] and added["test_top1_error"] == \
        json.loads((plain / "result.json").read_text())["test_top1_error"]
    assert evaluate_main([str(plain), "--record"]) == 2  # --record without --pool
    assert "--record goes with --pool" in capsys.readouterr().err


def test_a_finished_run_asked_again_with_the_pool_says_how_to_score_it(pooled_runs, caplog, tmp_path):
    import shutil

    copy = tmp_path / "plain"
    shutil.copytree(pooled_runs / "plain", copy)
    (copy / ".lock").unlink(missing_ok=True)
    result = json.loads((copy / "result.json").read_text())
    result.pop("eval_pool", None)  # as trained (another test may have recorded it since)
    (copy / "result.json").write_text(json.dumps(result))
    with caplog.at_level("INFO", logger="selectscale"):
        result = fit(make_cfg(copy, *POOL, "trainer.resume=auto"))
    assert "eval_pool" not in result and "selectscale-evaluate" in caplog.text and "--pool --record" in caplog.text
