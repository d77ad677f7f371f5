"""Issue 22: the validation split, rates chosen without the test set, and a study whose runs are results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from report_fixtures import make_result, write_run

from selectscale.data import build_dataset
from selectscale.data.holdout import class_balanced_holdout
from selectscale.experiments import SMOKE_OVERRIDES, main, run_table, table_jobs
from selectscale.report.collect import collect
from selectscale.report.selection import choose_rates
from selectscale.report.specs import ExperimentError, load_table, select_rows
from selectscale.report.table_files import report_table
from selectscale.report.tables import group

ROOT = Path(__file__).resolve().parents[1]
POOL_SEEDS = 25  # issue 37's study: the seeds a row planned from its pilot (results/mini_overfit_pool/pilot.md)


def test_holdout_is_class_balanced_disjoint_and_fixed_by_its_seed():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 51, 52, 53, 54, 55, 56, 57, 58, 59]))
    kept, held = class_balanced_holdout(labels, 0.2, seed=0)
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(labels.numel()))  # a partition
    for label in range(10):
        members = int((labels == label).sum())
        assert int((labels[held] == label).sum()) == int(0.2 * members + 0.5)
    again, other = class_balanced_holdout(labels, 0.2, seed=0)[1], class_balanced_holdout(labels, 0.2, seed=1)[1]
    assert torch.equal(again, held) and not torch.equal(other, held)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        class_balanced_holdout(labels, 1.0, seed=0)


def test_a_validation_run_evaluates_on_training_images_only():
    full = build_dataset("synthetic", num_train=400, num_test=100)
    held = build_dataset("synthetic", num_train=400, num_test=100, validation_fraction=0.25)
    assert held.evaluated_on == "validation" and full.evaluated_on == "test"
    assert len(held.train) + len(held.test) == 400
    for label in range(10):  # round half up of a quarter of each class
        assert int((held.test.labels == label).sum()) == int(0.25 * int((full.train.labels == label).sum()) + 0.5)
    pool = {image.numpy().tobytes() for image in full.train.images}
    assert all(image.numpy().tobytes() in pool for image in held.test.images)  # every one a training image
    test_images = {image.numpy().tobytes() for image in full.test.images}
    assert not any(image.numpy().tobytes() in test_images for image in held.test.images)


def test_a_training_subset_is_class_balanced_the_same_with_or_without_a_validation_split_and_disjoint_from_it():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 51, 52, 53, 54, 55, 56, 57, 58, 59]))
    subset, none_held = class_balanced_holdout(labels, 0.0, seed=0, per_class=12)
    beside, held = class_balanced_holdout(labels, 0.2, seed=0, per_class=12)
    assert none_held.numel() == 0 and torch.equal(subset, beside)  # the final runs train on what the grid trained on
    assert torch.bincount(labels[subset]).tolist() == [12] * 10
    assert not set(subset.tolist()) & set(held.tolist())
    assert torch.equal(held, class_balanced_holdout(labels, 0.2, seed=0)[1])  # the held-out draw is unchanged
    with pytest.raises(ValueError, match="dataset.train_per_class"):  # 50 images: 10 held + 41 do not fit
        class_balanced_holdout(labels, 0.2, seed=0, per_class=41)


def test_a_subset_run_trains_on_its_subset_and_still_evaluates_on_the_test_images():
    full = build_dataset("synthetic", num_train=400, num_test=100)
    subset = build_dataset("synthetic", num_train=400, num_test=100, train_per_class=5)
    assert subset.evaluated_on == "test" and len(subset.train) == 50
    assert torch.equal(subset.test.images, full.test.images)
    assert torch.bincount(subset.train.labels, minlength=10).tolist() == [5] * 10


def _validation_run(root: Path, label: str, seed: int, error: float, retain: float, evaluated_on="validation"):
    return write_run(root, f"{label}/seed{seed}", make_result(
        seed, error, **{"config.drop.name": "spatial_scale", "config.drop.top_rate": None,
                        "config.drop.retain_rate": retain, "dataset.evaluated_on": evaluated_on,
                        "config.dataset.validation_fraction": 0.2}))


def test_selection_picks_the_lowest_validation_error_and_refuses_test_evaluated_runs(tmp_path):
    for seed, (low, high) in enumerate([(0.30, 0.28), (0.31, 0.29)]):
        _validation_run(tmp_path, "a", seed, low, 0.4)
        _validation_run(tmp_path, "b", seed, high, 0.7)
    groups = group(collect([tmp_path]).rows, by=("drop", "retain_rate"))
    for entry in groups:
        entry.key = (entry.rows[0].path.parent.parent.name, *entry.key)  # the row label leads, as in the report
    chosen = choose_rates(groups)
    assert list(chosen) == ["spatial_scale"] and chosen["spatial_scale"].rows[0].retain_rate == 0.7
    _validation_run(tmp_path, "c", 0, 0.01, 0.2, evaluated_on="test")  # best by far, but on the test images
    groups = group(collect([tmp_path]).rows, by=("drop", "retain_rate"))
    for entry in groups:
        entry.key = (entry.rows[0].path.parent.parent.name, *entry.key)
    with pytest.raises(ExperimentError, match="evaluated on the test split"):
        choose_rates(groups)


def test_a_study_with_committed_runs_keeps_its_rows_in_its_own_folder(tmp_path):
    table = load_table("mini_overfit")
    jobs = table_jobs(table, Path(table.runs_folder), 5, None, None, [])
    assert len(jobs) == 35  # 7 rows x 5 seeds (issue 22)
    command = dict(item.split("=", 1) for item in jobs[0].command if item.startswith("output_dir="))
    assert command["output_dir"] == "results/mini_overfit/runs/none/seed0"
    selection = load_table("mini_overfit_selection")
    assert all("dataset.validation_fraction=0.2" in row.overrides for row in selection.rows)


@pytest.mark.parametrize("study, chosen_in", [("mini_overfit", "mini_overfit"),
                                               ("mini_overfit_subset", "mini_overfit_subset"),
                                               ("mini_overfit_pool", "mini_overfit_subset")])
def test_the_study_trains_the_rates_the_selection_chose(study, chosen_in):
    """The study's method rows use selection.json's choice, which its committed validation runs reproduce (issue
    37's pool study trains the subset study's choice)."""
    chosen_file = ROOT / "results" / chosen_in / "selection.json"
    if not chosen_file.is_file():
        pytest.skip(f"results/{study}/selection.json not yet rendered")
    chosen = json.loads(chosen_file.read_text())["chosen"]
    rows = {row.label: dict(item.split("=", 1) for item in row.overrides) for row in load_table(study).rows}
    for method, choice in chosen.items():
        if method == "none":
            continue
        overrides = rows[method]
        for key in ("top_rate", "retain_rate"):
            if choice[key] is not None:
                assert float(overrides[f"drop.{key}"]) == choice[key], (method, key)


def test_the_subset_study_chooses_on_the_images_it_trains_on_and_tests_on_the_test_images():
    def settings(name):
        return [dict(item.split("=", 1) for item in row.overrides if "=" in item) for row in load_table(name).rows]

    study, grid = settings("mini_overfit_subset"), settings("mini_overfit_subset_selection")
    shared = ("model", "dataset.train_per_class", "trainer.epochs", "trainer.batch_size", "dataset.split_seed")
    for key in shared:
        values = {row.get(key) for row in grid}
        assert {row.get(key) for row in study} == values and len(values) == 1, key
    assert all(row["dataset.validation_fraction"] == "0.2" for row in grid)
    assert not any("dataset.validation_fraction" in row for row in study)


def test_selection_end_to_end_on_synthetic_data(tmp_path):
    table = select_rows(load_table("mini_overfit_selection"), "none,spatial_dropout-retain0.9")
    run_table(table, tmp_path / "runs", 1, 1, None, None, SMOKE_OVERRIDES)
    outputs = report_table(table, tmp_path / "runs", tmp_path / "results", 1)
    assert [path.name for path in outputs] == ["selection.md", "selection.json"]
    text = outputs[0].read_text()
    assert "spatial_dropout-retain0.9" in text and "validation" in text
    result = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert result["dataset"]["evaluated_on"] == "validation" and result["environment"]["torchvision"]


@pytest.mark.parametrize("name, seeds", [("mini_overfit_selection", 1), ("mini_overfit", 5),
                                         ("mini_overfit_subset_selection", 1), ("mini_overfit_subset", 5),
                                         ("mini_overfit_pool", POOL_SEEDS)])
def test_committed_tables_rerender_byte_for_byte_from_the_committed_runs(tmp_path, monkeypatch, name, seeds):
    table = load_table(name)
    study = table.study or name
    outputs = (["selection.md", "selection.json"] if table.layout == "selection" else
               ["table.md", "summary.json", "paired.md"])
    if not (ROOT / "results" / study / outputs[0]).is_file():
        pytest.skip(f"results/{study}/{outputs[0]} not yet rendered")
    monkeypatch.chdir(ROOT)  # the provenance line names the --runs folder as given: relative to the repository
    assert main(["report", name, "--seeds", str(seeds), "--out", str(tmp_path)]) == 0
    for file_name in outputs:
        committed = (ROOT / "results" / study / file_name).read_text()
        assert (tmp_path / study / file_name).read_text() == committed, file_name


@pytest.mark.parametrize("study", ["mini_overfit", "mini_overfit_subset"])
def test_a_finished_study_meets_the_regime_and_comes_from_one_code_version_and_machine_kind(study):
    """Issue 22's conditions on a rendered study: n = 5 a row, no-drop final training error <= 2% and a test-train
    gap of >= 15 points, every row's p, and every final run (not the pilot, not the grid) from one code version and
    one machine kind."""
    summary_file = ROOT / "results" / study / "summary.json"
    if not summary_file.is_file():
        pytest.skip(f"results/{study}/summary.json not yet rendered")
    rows = {row["method"]: row for row in json.loads(summary_file.read_text())["rows"]}
    assert all(row["n"] == 5 and row["seeds"] == [0, 1, 2, 3, 4] for row in rows.values())
    assert rows["none"]["train_top1_error_mean"] <= 2.0
    assert rows["none"]["test_top1_error_mean"] - rows["none"]["train_top1_error_mean"] >= 15.0
    assert all(row["p_vs_none"] is not None for name, row in rows.items() if name != "none")
    assert all(row["p_vs_best_other"] is not None for row in rows.values())
    runs = ROOT / "results" / study / "runs"
    results = [json.loads(path.read_text()) for row in rows for path in (runs / row).glob("seed*/result.json")]
    assert len(results) == 5 * len(rows)
    assert len({result["code"]["source"] for result in results}) == 1
    assert len({json.dumps(result["environment"], sort_keys=True) for result in results}) == 1


def _study_source_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("study_source", ROOT / "scripts" / "study_source.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


XEON = {"python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1", "cpu_model": "Xeon", "cpu_native_bf16": True,
        "cpu_count": 2}


def test_study_source_refuses_a_checkout_of_another_code_version(tmp_path, monkeypatch, capsys):
    script = _study_source_script()
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "environment", lambda: dict(XEON, cpu_count=4))  # the core count does not count
    monkeypatch.setattr(script, "git_commit", lambda: {"commit": "c0ffee", "dirty": False, "source": "aaa-bbb"})
    assert script.main(["mini_overfit"]) == 0  # no committed runs: any version may start the study
    write_run(tmp_path / "results/mini_overfit/runs/none", "seed0", make_result(
        0, 0.2, **{"code": {"commit": "1234567", "dirty": False, "source": "aaa-bbb"}, "environment": XEON}))
    assert script.main(["mini_overfit"]) == 0
    monkeypatch.setattr(script, "git_commit", lambda: {"commit": "beef", "dirty": False, "source": "ccc-ddd"})
    assert script.main(["mini_overfit"]) == 2
    assert "commit 1234567" in capsys.readouterr().err


@pytest.mark.parametrize("change", [dict(cpu_model="AMD EPYC", cpu_native_bf16=False), dict(torch="2.15.0")])
def test_study_source_refuses_another_machine_kind(tmp_path, monkeypatch, capsys, change):
    script = _study_source_script()
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "git_commit", lambda: {"commit": "c0ffee", "dirty": False, "source": "aaa-bbb"})
    write_run(tmp_path / "results/mini_overfit/runs/none", "seed0", make_result(
        0, 0.2, **{"code": {"commit": "c0ffee", "dirty": False, "source": "aaa-bbb"}, "environment": XEON}))
    monkeypatch.setattr(script, "environment", lambda: dict(XEON, **change))
    assert script.main(["mini_overfit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Xeon (native bf16)" in err and str(next(iter(change.values()))) in err


def test_study_source_commit_names_the_study_commit_only_on_its_machine_kind(tmp_path, monkeypatch, capsys):
    script = _study_source_script()
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "environment", lambda: XEON)
    runs = tmp_path / "results/mini_overfit/runs"
    assert script.main(["--commit", "mini_overfit"]) == 2  # nothing committed: nothing to go on from
    write_run(runs / "none", "seed0", make_result(
        0, 0.2, **{"code": {"commit": "1234567", "dirty": False, "source": "aaa-bbb"}, "environment": XEON}))
    capsys.readouterr()
    assert script.main(["--commit", "mini_overfit"]) == 0
    assert capsys.readouterr().out.strip() == "1234567"
    monkeypatch.setattr(script, "environment", lambda: dict(XEON, cpu_model="AMD EPYC"))
    assert script.main(["--commit", "mini_overfit"]) == 2
    monkeypatch.setattr(script, "environment", lambda: XEON)
    write_run(runs / "selectout", "seed0", make_result(
        0, 0.2, **{"code": {"commit": "89abcde", "dirty": False, "source": "ccc-ddd"}, "environment": XEON}))
    assert script.main(["--commit", "mini_overfit"]) == 2
    assert "mix code versions" in capsys.readouterr().err


@pytest.mark.parametrize("study, per_stage", [("mini_overfit", "0/0/1"), ("mini_overfit_subset", "0/1/1")])
def test_each_study_flags_its_chosen_selectout_as_a_near_no_op(study, per_stage):
    """Issue 34: Selectout at top 0.2 and retain 0.99 (ResNet-20) or 0.98 (ResNet-8) drops round((1 - p) C) maps of
    the 16, 32 and 64 of each stage: fewer than one a drop layer on average, flagged where the rate is chosen."""
    text = (ROOT / "results" / study / "selection.md").read_text()
    (choice,) = [line for line in text.splitlines() if line.startswith("- selectout: ")]
    assert "**near no-op: drops" in choice
    retain = json.loads((ROOT / "results" / study / "selection.json").read_text())["chosen"]["selectout"]["retain_rate"]
    (row,) = [line for line in text.splitlines() if line.startswith(f"| selectout-top0.2-retain{retain} |")]
    assert f"drops {'0.33' if per_stage == '0/0/1' else '0.67'} maps a layer: {per_stage} at C = 16/32/64" in row
    assert "near no-op" in row


def test_the_pool_study_is_the_subset_study_plus_the_pool_in_fp32():
    """Issue 37: the same setting and rates as mini_overfit_subset, scored on the pool left by ITS selection split
    (fraction 0.2, split_seed 0), fp32 whatever the CPU (auto would pick bf16 on a native-bf16 one)."""
    def overrides(name):
        return {row.label: set(row.overrides) for row in load_table(name).rows}

    pool, subset = overrides("mini_overfit_pool"), overrides("mini_overfit_subset")
    extra = {"dataset.eval_pool=true", "dataset.selection_fraction=0.2", "trainer.precision=fp32"}
    assert pool == {label: settings | extra for label, settings in subset.items()}
    grid = load_table("mini_overfit_subset_selection").rows[0].overrides
    assert "dataset.validation_fraction=0.2" in grid and not any("split_seed" in item for item in grid)
    assert load_table("mini_overfit_pool").seed_blocks and not load_table("mini_overfit_subset").seed_blocks


def _write_block_run(runs: Path, row: str, seed: int, environment: dict) -> None:
    write_run(runs / row, f"seed{seed}", make_result(seed, 0.2, **{
        "code": {"commit": "1234567", "dirty": False, "source": "aaa-bbb"}, "environment": environment}))


def test_a_seed_block_study_goes_on_on_any_kind_leaving_other_kinds_seeds_to_them(tmp_path, monkeypatch, capsys):
    """Issue 37: all rows of a seed on one machine kind, seeds on any kind."""
    script = _study_source_script()
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "git_commit", lambda: {"commit": "1234567", "dirty": False, "source": "aaa-bbb"})
    runs = tmp_path / "results/mini_overfit_pool/runs"
    amd = dict(XEON, cpu_model="AMD EPYC", cpu_native_bf16=False)
    _write_block_run(runs, "none", 0, XEON)
    _write_block_run(runs, "selectscale", 0, XEON)
    _write_block_run(runs, "none", 2, amd)
    monkeypatch.setattr(script, "environment", lambda: XEON)
    assert script.main(["--blocked-seeds", "mini_overfit_pool"]) == 0
    assert capsys.readouterr().out.strip() == "2"
    assert script.main(["mini_overfit_pool"]) == 0 and "seeds 2 were started on another" in capsys.readouterr().out
    assert script.main(["--commit", "mini_overfit_pool"]) == 0 and capsys.readouterr().out.strip() == "1234567"
    monkeypatch.setattr(script, "environment", lambda: amd)
    assert script.main(["--blocked-seeds", "mini_overfit_pool"]) == 0
    assert capsys.readouterr().out.strip() == "0"
    assert script.main(["mini_overfit"]) == 0  # a study without blocks and without runs here: unaffected


def test_skip_seeds_leaves_those_seeds_out_of_the_queue(tmp_path, capsys):
    table = select_rows(load_table("mini_overfit_pool"), "none")
    small = [*SMOKE_OVERRIDES, "dataset.train_size=300", "dataset.train_per_class=8"]  # room for a pool
    run_table(table, tmp_path / "runs", 3, 1, None, None, small, skip_seeds=frozenset({0, 2}))
    assert sorted(path.parent.name for path in (tmp_path / "runs").rglob("result.json")) == ["seed1"]
    assert "seeds 0, 2 skipped" in capsys.readouterr().out
    assert main(["run", "mini_overfit_pool", "--skip-seeds", "1,x", "--runs", str(tmp_path / "runs")]) == 2
    assert "--skip-seeds=1,x" in capsys.readouterr().err
