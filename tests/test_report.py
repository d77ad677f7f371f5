"""selectscale.report on fixture run directories: good runs, broken ones, and the flags a table must show."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import DELETE, make_result, write_run

from selectscale.report import collect, flatten_config, group, render_latex, render_markdown, setting_of
from selectscale.runs.history import ADDED_KEYS, is_runtime_key
from selectscale.runs.result import RESULT_FILE


@pytest.fixture
def three_seeds(tmp_path: Path) -> tuple[Path, list[float]]:
    errors = [0.0522, 0.0531, 0.0509]
    for seed, error in enumerate(errors):
        write_run(tmp_path, f"wrn_selectscale_seed{seed}", make_result(seed=seed, top1=error))
    return tmp_path, errors


def skipped_reasons(collection) -> dict[str, str]:
    return {path.parent.name: reason for path, reason in collection.skipped}


def test_mean_and_sample_std_over_three_seeds(three_seeds):
    root, errors = three_seeds
    collection = collect([root])
    assert len(collection.rows) == 3 and collection.skipped == []
    (only,) = group(collection.rows, by=("model", "drop"))
    percent = [100 * error for error in errors]
    assert only.key == ("wrn20_8", "selectscale") and only.n == 3 and only.seeds == (0, 1, 2)
    assert only.top1_mean == pytest.approx(np.mean(percent))
    assert only.top1_std == pytest.approx(np.std(percent, ddof=1))
    assert only.top1_std == pytest.approx(statistics.stdev(percent))
    assert only.top5_mean == pytest.approx(0.11) and only.top5_std == pytest.approx(0.0)
    assert not only.mixed_settings and only.flags == [] and only.data == "official"
    assert only.hardware == frozenset({"NVIDIA H200"})


def test_row_fields_and_setting_leave_out_seed_and_runtime_keys(tmp_path):
    write_run(tmp_path, "a", make_result(seed=3, **{"config.trainer.device": "cpu", "config.dataset.root": "/x"}))
    write_run(tmp_path, "b", make_result(seed=4))
    rows = collect([tmp_path]).rows
    assert rows[0].setting == rows[1].setting
    row = rows[0]
    assert (row.dataset, row.train_size, row.verified, row.model, row.drop) == ("cifar10", 50000, True, "wrn20_8",
                                                                                "selectscale")
    assert (row.top_rate, row.retain_rate, row.curriculum, row.schedule) == (0.2, 0.1, "none", "step_cifar")
    assert (row.epochs, row.batch_size, row.seed, row.device, row.world_size) == (200, 128, 3, "NVIDIA H200", 1)
    keys = row.setting_dict()
    for excluded in ("seed", "output_dir", "dataset.root", "dataset.download", "dataset.workers", "trainer.device",
                     "trainer.progress_bar", "trainer.resume", "trainer.dist_timeout_s", "trainer.compile"):
        assert excluded not in keys
    assert keys["drop.retain_rate"] == 0.1 and keys["schedule.milestones"] == (60, 120, 160)
    hash(row.setting)


def test_flatten_config_uses_dotted_keys():
    assert flatten_config({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {"a.b.c": 1, "a.d": (1, 2), "e": None}
    setting = dict(setting_of({"seed": 1, "model": {"name": "x"}}))
    assert setting["model.name"] == "x" and "seed" not in setting
    # an old record gets the keys added since, at their values (the loggers' are runtime keys, never compared)
    assert set(setting) == {"model.name", *(key for key in ADDED_KEYS if not is_runtime_key(key))}


def test_incomplete_run_is_left_out_and_listed(three_seeds):
    root, _ = three_seeds
    write_run(root, "preempted", make_result(seed=3, complete=False, epochs_completed=57))
    collection = collect([root])
    assert len(collection.rows) == 3
    assert skipped_reasons(collection)["preempted"] == "incomplete run: 57 of 200 epochs completed"
    text = render_markdown(group(collection.rows, ("model",)), skipped=collection.skipped)
    assert f"Left out: {root / 'preempted' / RESULT_FILE}: incomplete run: 57 of 200 epochs completed" in text


def test_broken_json_and_other_schema_version_are_left_out_with_reasons(three_seeds):
    root, _ = three_seeds
    write_run(root, "truncated", json.dumps(make_result(seed=5))[:100])
    write_run(root, "future", make_result(seed=6, schema_version=2))
    write_run(root, "a_list", "[1, 2]")
    collection = collect([root])
    reasons = skipped_reasons(collection)
    assert len(collection.rows) == 3 and len(collection.skipped) == 3
    assert reasons["truncated"].startswith("not valid JSON")
    assert "schema_version 2 found" in reasons["future"] and "only 1 is supported" in reasons["future"]
    assert reasons["a_list"] == "not a JSON object but a list"
    assert all("\n" not in reason for reason in reasons.values())


def test_missing_fields_are_named(tmp_path):
    write_run(tmp_path, "no_top1", make_result(test_top1_error=DELETE))
    write_run(tmp_path, "no_model", make_result(**{"config.model": DELETE, "dataset.verified": DELETE}))
    write_run(tmp_path, "no_version", make_result(schema_version=DELETE))
    write_run(tmp_path, "null_top1", make_result(top1=None))
    collection = collect([tmp_path])
    reasons = skipped_reasons(collection)
    assert collection.rows == []
    assert reasons["no_top1"] == "missing field: test_top1_error"
    assert reasons["no_model"] == "missing fields: dataset.verified, config.model.name"
    assert reasons["no_version"] == "missing field: schema_version (supported: 1)"
    assert reasons["null_top1"] == "test_top1_error is None, not a fraction in [0, 1]"


def test_mixed_retain_rates_are_flagged_and_not_averaged(tmp_path):
    write_run(tmp_path, "rho01", make_result(seed=0, **{"config.drop.retain_rate": 0.1}))
    write_run(tmp_path, "rho04", make_result(seed=1, top1=0.06, **{"config.drop.retain_rate": 0.4}))
    groups = group(collect([tmp_path]).rows, by=("model", "drop"))
    (mixed,) = groups
    assert mixed.mixed_settings and mixed.differing_keys == ("drop.retain_rate",)
    assert mixed.top1_mean is None and mixed.top1_std is None and mixed.top5_mean is None
    assert "mixed settings: drop.retain_rate" in mixed.flags
    assert "| not computed (mixed settings) |" in render_markdown(groups)
    separate = group(collect([tmp_path]).rows, by=("model", "drop", "retain_rate"))
    assert [g.key[-1] for g in separate] == [0.1, 0.4] and not any(g.mixed_settings for g in separate)
    assert [g.top1_mean for g in separate] == pytest.approx([5.22, 6.0])


def test_fewer_seeds_than_expected_and_single_run_format(tmp_path):
    write_run(tmp_path, "one", make_result(seed=0))
    groups = group(collect([tmp_path]).rows, by=("model",), expected_seeds=5)
    assert groups[0].flags == ["1 of 5 seeds"] and groups[0].top1_std is None
    text = render_markdown(group(collect([tmp_path]).rows, by=("model",)), expected_seeds=5)
    assert "| 5.22 (1) |" in text and "1 of 5 seeds" in text
    assert text.count("1 of 5 seeds") == 1
    assert "of 5 seeds" not in render_markdown(group(collect([tmp_path]).rows, by=("model",)), expected_seeds=1)


def test_unverified_mini_and_synthetic_data_are_labelled(tmp_path):
    write_run(tmp_path, "mini", make_result(**{"dataset.verified": False, "dataset.train_size": 5438}))
    write_run(tmp_path, "synthetic", make_result(**{"dataset.verified": False, "dataset.name": "synthetic",
                                                    "dataset.train_size": 4000}))
    mini, synthetic = group(collect([tmp_path]).rows, by=("dataset",))
    assert mini.data == "mini (5,438 train images)" and "unverified data" in mini.flags
    assert synthetic.data == "synthetic"


def test_shortened_epochs_are_labelled(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"short{seed}", make_result(seed=seed, **{"config.trainer.epochs": 20,
                                                                       "epochs_completed": 20}))
    (short,) = group(collect([tmp_path]).rows, by=("model",), paper_epochs=200)
    assert "shortened: 20 of 200 epochs" in short.flags and short.epochs == (20,)
    assert "step_cifar, shortened 20/200" in render_markdown([short])
    (full,) = group(collect([tmp_path]).rows, by=("model",), paper_epochs=20)
    assert full.flags == [] and "step_cifar, full (20)" in render_markdown([full])


def test_duplicate_seed_is_flagged(three_seeds):
    root, _ = three_seeds
    write_run(root, "copy_of_seed1", make_result(seed=1, top1=0.0531))
    (only,) = group(collect([root]).rows, by=("model", "drop"))
    assert only.duplicate_seeds == (1,) and "duplicate seeds: 1" in only.flags and only.n == 4


def test_markdown_table_has_paper_column_provenance_and_warning(three_seeds):
    root, _ = three_seeds
    write_run(root, "broken", "{")
    collection = collect([root])
    groups = group(collection.rows, by=("model", "drop"), paper_epochs=200)
    text = render_markdown(groups, paper={("wrn20_8", "selectscale"): "5.10"}, expected_seeds=5, title="CIFAR-10",
                           provenance_lines=["commit 0123abcd"], skipped=collection.skipped)
    lines = text.splitlines()
    assert lines[0] == "## CIFAR-10" and "- commit 0123abcd" in lines
    header = next(line for line in lines if line.startswith("| model"))
    assert header == ("| model | drop | measured top-1 (%) mean ± std (n) | paper (%) | final train top-1 (%) "
                      "mean (n) | p vs no drop | p vs best other | schedule (epochs) | data | hardware | flags |")
    mean, std = np.mean([5.22, 5.31, 5.09]), np.std([5.22, 5.31, 5.09], ddof=1)
    row = (f"| wrn20_8 | selectscale | {mean:.2f} ± {std:.2f} (3) | 5.10 | n/a | — | — | step_cifar, full (200) "
           "| official |")
    assert any(line.startswith(row) and line.endswith("| NVIDIA H200 | 3 of 5 seeds |") for line in lines)
    assert f"> - Left out: {root / 'broken' / RESULT_FILE}: not valid JSON" in text


def test_latex_table_has_paper_column_and_escapes(three_seeds):
    root, _ = three_seeds
    write_run(root, "future", make_result(schema_version=2))
    collection = collect([root])
    groups = group(collection.rows, by=("model", "drop"))
    text = render_latex(groups, paper={("wrn20_8", "selectscale"): "5.10"}, expected_seeds=3, title="CIFAR_10 & co",
                        provenance_lines=["100% of runs"], skipped=collection.skipped)
    assert r"\begin{tabular}{lllllllllll}" in text and r"\caption{CIFAR\_10 \& co}" in text
    assert r"measured top-1 (\%) mean $\pm$ std (n) & paper (\%)" in text
    assert r"wrn20\_8 & selectscale & 5.21 $\pm$ 0.11 (3) & 5.10 &" in text
    assert r"{\footnotesize 100\% of runs}" in text
    assert r"\item Left out:" in text and "schema\\_version 2 found" in text


def test_unknown_group_key_and_missing_root_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="cannot group by colour"):
        group([], by=("colour",))
    with pytest.raises(FileNotFoundError):
        collect([tmp_path / "nowhere"])


@pytest.mark.parametrize("name, payload, reason", [
    ("undecodable", b"\xff\xfe{\x00garbage", "not UTF-8 text"),
    ("deep", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("model-not-a-mapping", json.dumps(make_result(**{"config.model": 5})), "config.model.name"),
    ("drop-a-list", json.dumps(make_result(**{"config.drop": [1, 2]})), "config.drop.name"),
    ("name-a-number", json.dumps(make_result(**{"config.model.name": 7})), "not a name"),
    ("negative-epochs", json.dumps(make_result(**{"config.trainer.epochs": -3})), "not an integer >= 1"),
    ("absurd-rate", json.dumps(make_result(**{"config.drop.top_rate": 7.5})), "not a rate in [0, 1]"),
    ("nan-error", json.dumps(make_result(top1=float("nan"))), "not a fraction"),
    ("an-array", "[]", "not a JSON object"),
])
def test_the_report_never_crashes_on_a_bad_result_file(three_seeds, name, payload, reason):
    """Issue 13: one bad result.json is left out with its reason; the rest still renders."""
    root, _ = three_seeds
    run_dir = root / name
    run_dir.mkdir()
    path = run_dir / RESULT_FILE
    path.write_bytes(payload) if isinstance(payload, bytes) else path.write_text(payload)
    collection = collect([root])
    assert len(collection.rows) == 3 and reason in skipped_reasons(collection)[name]
    text = render_markdown(group(collection.rows, ("model", "drop")), skipped=collection.skipped)
    assert f"Left out: {path}" in text and "(3)" in text


def test_a_capped_run_is_never_averaged_with_full_runs(three_seeds):
    """Issue 13: trainer.max_steps_per_epoch is part of the setting, so a capped seed makes the cell
    'mixed settings' (not averaged) and the row says it was capped."""
    root, _ = three_seeds
    write_run(root, "capped", make_result(seed=3, **{"config.trainer.max_steps_per_epoch": 5}))
    (only,) = group(collect([root]).rows, by=("model", "drop"))
    assert only.mixed_settings and only.top1_mean is None
    assert "trainer.max_steps_per_epoch" in only.differing_keys and "capped at 5 steps per epoch" in only.flags
