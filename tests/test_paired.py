"""Issue 37, item 2: rows compared seed by seed (selectscale/report/paired.py, paired_table.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from report_fixtures import make_result, write_run
from scipy import stats as scipy_stats

from selectscale.report.collect import collect
from selectscale.report.paired import holm, kind_effect, measures_of, paired_compare, paired_mdd, seeds_for
from selectscale.report.paired_table import render_paired, summary_entry
from selectscale.report.tables import group

XEON = {"cpu_model": "Xeon", "cpu_native_bf16": True, "python": "3.11.7", "torch": "2.14.1"}
AMD = dict(XEON, cpu_model="AMD EPYC", cpu_native_bf16=False)
# per-seed errors (fractions) of two rows: the seed moves both, so the paired test sees what Welch's cannot
NONE = [0.480, 0.470, 0.495, 0.462, 0.488, 0.475]
DROP = [0.472, 0.463, 0.486, 0.455, 0.481, 0.466]


def _pool(top1: float, unused: int = 3500) -> dict:
    return {"top1_error": top1, "selection_fraction": 0.2, "split_seed": 0, "unused_images": unused,
            "test_images": 1017}


def _write(root, drop: str, seed: int, top1: float, pool: float | None = None, environment=XEON, unused=3500):
    extra = {"config.drop.name": drop, "environment": environment}
    if pool is not None:
        extra["eval_pool"] = _pool(pool, unused)
    write_run(root, f"{drop}/seed{seed}", make_result(seed, top1, **extra))


def _groups(root):
    return group(collect([root]).rows, by=("drop",))


def test_the_paired_test_pairs_runs_by_seed_and_agrees_with_scipy(tmp_path):
    for seed, (none, drop) in enumerate(zip(NONE, DROP, strict=True)):
        _write(tmp_path, "none", seed, none)
        _write(tmp_path, "selectscale", seed, drop)
    _write(tmp_path, "none", 9, 0.30)  # a seed the other row lacks: not paired
    groups = {entry.key[0]: entry for entry in _groups(tmp_path)}
    result = paired_compare(groups["selectscale"], groups["none"], "test", ("selectscale", "none"))
    reference = scipy_stats.ttest_rel(np.array(DROP) * 100, np.array(NONE) * 100)
    assert result.seeds == tuple(range(6))
    assert result.mean_difference == pytest.approx(100 * np.mean(np.array(DROP) - np.array(NONE)))
    assert result.p == pytest.approx(reference.pvalue) and result.p < 0.001
    interval = reference.confidence_interval(0.95)
    assert result.ci == pytest.approx((interval.low, interval.high))
    assert result.welch_p > 0.2  # the same numbers unpaired: the seed-to-seed spread hides the difference
    assert result.kind.p is None and "one machine kind" in result.kind.line()


def test_the_paired_minimum_detectable_difference_has_the_stated_power():
    """At the MDD of n = 10 pairs, a simulated paired t-test rejects 80% of the time (20,000 studies)."""
    n, sd = 10, 0.8
    mdd = paired_mdd(sd, n)
    differences = np.random.default_rng(0).normal(mdd, sd, size=(20_000, n))
    t = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / np.sqrt(n))
    power = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.80, abs=0.012)
    assert paired_mdd(sd, 2) is None and paired_mdd(0.0, 10) is None
    planned = seeds_for(sd, 1.0)
    assert seeds_for(sd, mdd) == n and paired_mdd(sd, planned) <= 1.0 < paired_mdd(sd, planned - 1)


def test_the_pool_is_a_measure_only_when_every_run_has_the_same_pool(tmp_path):
    for seed in range(3):
        _write(tmp_path, "none", seed, 0.48, pool=0.47 + seed / 1000)
        _write(tmp_path, "spatial_scale", seed, 0.47, pool=0.465 + seed / 500)
    groups = _groups(tmp_path)
    assert measures_of(groups) == ["test", "pool"]
    first, second = sorted(groups, key=lambda entry: entry.key[0] != "spatial_scale")
    assert paired_compare(first, second, "pool", ("a", "b")).n == 3
    _write(tmp_path, "none", 3, 0.48, pool=0.47, unused=3000)  # another pool: never compared on it
    _write(tmp_path, "spatial_scale", 3, 0.47, pool=0.46)
    groups = _groups(tmp_path)
    first, second = sorted(groups, key=lambda entry: entry.key[0] != "spatial_scale")
    assert paired_compare(first, second, "pool", ("a", "b")) is None
    _write(tmp_path, "spatial_scale", 4, 0.47)  # a run without the pool: the pool is no measure of the table
    assert measures_of(_groups(tmp_path)) == ["test"]


def test_the_machine_kind_term_finds_a_kind_that_shifts_the_differences():
    differences = [-1.0, -1.1, -0.9, -1.05, 1.0, 1.1, 0.9, 1.05]
    shifted = kind_effect(differences, ["Xeon"] * 4 + ["AMD"] * 4)
    assert shifted.p < 0.001 and "2 machine kinds" in shifted.line()
    assert kind_effect(differences[:4], ["Xeon"] * 4).p is None


def test_holms_adjustment_matches_the_step_down_rule_and_keeps_the_familywise_error():
    adjusted = holm([0.01, 0.04, None, 0.03, 0.005])  # by hand: 0.005x4, 0.01x3, 0.03x2, max(0.04x1, 0.06)
    assert adjusted[2] is None
    assert adjusted[:2] + adjusted[3:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # ten true null hypotheses a table: any raw p < 0.05 in ~40% of 20,000 tables, any Holm p < 0.05 in <= 5% of 4,000
    nulls = np.random.default_rng(0).uniform(size=(20_000, 10))
    raw = (nulls < 0.05).any(axis=1).mean()
    familywise = np.mean([min(holm(list(row))) < 0.05 for row in nulls[:4000]])
    assert raw > 0.35 and 0.03 < familywise <= 0.05 + 3 * (0.05 * 0.95 / 4000) ** 0.5


def test_the_paired_report_shows_test_and_pool_errors_side_by_side(tmp_path):
    for seed, (none, drop) in enumerate(zip(NONE, DROP, strict=True)):
        kind = XEON if seed < 3 else AMD  # seeds as blocks on two kinds
        _write(tmp_path, "none", seed, none, pool=none - 0.01, environment=kind)
        _write(tmp_path, "selectscale", seed, drop, pool=drop - 0.012, environment=kind)
    groups = _groups(tmp_path)
    text = render_paired(groups, "Study", ["provenance line"])
    assert "pool error (%) mean ± std (n)" in text and "| 4517 |" in text
    assert "## On the test images" in text and "## On the evaluation pool" in text
    assert "selectscale − none | 6 |" in text and "2 machine kinds" in text
    entry = summary_entry(groups)
    assert {item["measure"] for item in entry["comparisons"]} == {"test", "pool"}
    one_a_family = [(item["p_holm"], pytest.approx(item["p_paired"], abs=1e-4)) for item in entry["comparisons"]]
    assert all(holm_p == paired_p for holm_p, paired_p in one_a_family)
    assert "Holm p (family of 1)" in text
    assert entry["design"]["pool"]["n"] == 6 and entry["design"]["pool"]["mdd"] > 0
    json.dumps(entry)  # summary.json can hold it


def test_the_pool_studys_seed_plan_rerenders_from_its_committed_pilot_runs():
    """results/mini_overfit_pool/pilot.md holds scripts/plan_seeds.py's output for the committed seeds 0-3."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pilot = root / "results" / "mini_overfit_pool" / "pilot.md"
    if not (root / "results/mini_overfit_pool/runs/none/seed3/result.json").is_file():
        pytest.skip("the pilot's runs are not committed")
    done = subprocess.run([sys.executable, "scripts/plan_seeds.py", "results/mini_overfit_pool/runs/none", "--seeds",
                           "4"], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() in pilot.read_text()
    assert "**plan**: pilot SD, rho = 0: SD of a difference 1.67 pp -> n = 25" in done.stdout
