"""Welch's t-test, the p-value columns and the per-block comparisons of every rendered table (issue 12); the
ordering verdicts that count only separated pairs, the minimum detectable difference and the near-no-op flag
(issue 34)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from report_fixtures import make_result, write_run
from scipy import stats as scipy_stats

from selectscale.drop import Selectout, SpatialDropout
from selectscale.report import collect, comparison_cells, group, render_latex, render_markdown, table_cells, welch_test
from selectscale.report.evidence import summary_power, write_summary
from selectscale.report.selection import drop_load, format_load, near_no_op_flag
from selectscale.report.stats import (
    block_power,
    format_p,
    minimum_detectable_difference,
    ordering_as_paper,
    paper_number,
    pooled_sd,
)


def test_welch_matches_the_closed_form_at_two_degrees_of_freedom():
    # n = 2 a side with equal variances: dof = 2 exactly, where the t distribution has a closed-form tail.
    result = welch_test([0.0, 2.0], [3.0, 5.0])
    t = -3.0 / math.sqrt(2.0)
    assert result.t == pytest.approx(t) and result.dof == pytest.approx(2.0)
    assert result.p == pytest.approx(1.0 - abs(t) / math.sqrt(2.0 + t * t))


def test_welch_dof_is_welch_satterthwaite_for_unequal_variances():
    a, b = [5.1, 5.3, 5.2, 5.6, 5.0], [4.2, 4.9, 3.8]
    va, vb = [sum((x - sum(s) / len(s)) ** 2 for x in s) / (len(s) - 1) / len(s) for s in (a, b)]
    result = welch_test(a, b)
    assert result.t == pytest.approx((sum(a) / 5 - sum(b) / 3) / math.sqrt(va + vb))
    assert result.dof == pytest.approx((va + vb) ** 2 / (va**2 / 4 + vb**2 / 2))
    assert 0.0 < result.p < 0.1


@pytest.mark.parametrize("a, b", [([5.0], [4.0, 4.1]), ([], [1.0, 2.0]), ([3.0, 3.0], [3.0, 3.0])])
def test_welch_is_undefined_below_two_seeds_or_without_spread(a, b):
    assert welch_test(a, b) is None and format_p(welch_test(a, b)) == "n/a"


def test_p_formatting():
    assert format_p(welch_test([1.0, 1.1, 1.2], [5.0, 5.1, 5.2])) == "p<0.001"
    assert format_p(welch_test([0.0, 2.0], [3.0, 5.0])) == "p=0.168"


def test_paper_numbers_and_ordering():
    assert paper_number("5.22 ± 0.08") == 5.22 and paper_number("—") is None and paper_number("figure only") is None


def write_block(root, errors_by_drop: dict[str, list[float]]):
    for drop, errors in errors_by_drop.items():
        for seed, error in enumerate(errors):
            result = make_result(seed=seed, top1=error / 100, **{"config.drop.name": drop})
            write_run(root, f"{drop}_seed{seed}", result)
    return group(collect([root]).rows, by=("model", "drop"))


PAPER = {("wrn20_8", "none"): "4.93 ± 0.08", ("wrn20_8", "spatial_dropout"): "4.21 ± 0.11",
         ("wrn20_8", "spatial_scale"): "4.14 ± 0.05", ("wrn20_8", "selectscale"): "3.89 ± 0.10"}


def test_table_has_p_columns_and_the_comparison_block(tmp_path):
    groups = write_block(tmp_path, {"none": [5.0, 5.2, 4.9], "spatial_dropout": [4.4, 4.5, 4.3],
                                    "spatial_scale": [4.2, 4.3], "selectscale": [3.9, 4.0, 3.8]})
    header, body = table_cells(groups, PAPER, expected_seeds=3)
    rows = {cells[1]: dict(zip(header, cells, strict=True)) for cells in body}
    expected = format_p(welch_test([3.9, 4.0, 3.8], [5.0, 5.2, 4.9]))
    assert rows["selectscale"]["p vs no drop"] == expected and rows["none"]["p vs no drop"] == "—"
    # best other of selectscale = spatial_scale (lowest mean of the others), 2 vs 3 seeds: a number
    assert rows["selectscale"]["p vs best other"] == (
        f"{format_p(welch_test([3.9, 4.0, 3.8], [4.2, 4.3]))} (spatial_scale)")
    (line,) = comparison_cells(groups, PAPER)
    assert line[0] == "wrn20_8" and line[1] == "selectscale" and line[3] == "spatial_scale"
    # spatial_scale (4.25, n = 2) against spatial_dropout (4.40): ordered as in the paper, but not separated
    assert line[6].startswith("in part: ") and "1 of 6 pairs not resolved" in line[6]
    assert "spatial_scale < spatial_dropout" not in line[6] and "selectscale < none as in paper (p" in line[6]
    assert line[5] == f"{block_power(groups).mdd:.2f}"
    assert line[2].startswith("-1.13, t=") and "dof=" in line[2]
    text = render_markdown(groups, paper=PAPER, expected_seeds=3)
    assert "| block | SelectScale row |" in text and "Welch's unequal-variance t-test" in text
    assert r"p vs no drop & p vs best other" in render_latex(groups, paper=PAPER)


def test_one_seed_gives_n_a_never_a_number(tmp_path):
    groups = write_block(tmp_path, {"none": [5.0], "selectscale": [3.9, 4.0]})
    header, body = table_cells(groups, PAPER, expected_seeds=5)
    rows = {cells[1]: dict(zip(header, cells, strict=True)) for cells in body}
    assert rows["selectscale"]["p vs no drop"] == "n/a"
    (line,) = comparison_cells(groups, PAPER)
    assert "p n/a (< 2 seeds a side)" in line[2] and line[3] == "—"


def test_ordering_names_only_the_reversals_welch_separates(tmp_path):
    groups = write_block(tmp_path, {"none": [4.0, 4.1], "spatial_scale": [4.5, 4.6], "selectscale": [4.3, 4.2]})
    (line,) = comparison_cells(groups, PAPER)
    assert line[6].startswith("no: ")
    assert welch_test([4.5, 4.6], [4.0, 4.1]).p < 0.05  # reversed and separated: named, with its p
    assert "spatial_scale < none in paper, reversed here (p=0.019)" in line[6]
    assert welch_test([4.3, 4.2], [4.0, 4.1]).p > 0.05  # reversed in the means only: not resolved, not named
    assert "selectscale < none" not in line[6] and "2 of 3 pairs not resolved" in line[6]
    assert ordering_as_paper(groups[:1], {}, str).startswith("n/a")


def test_an_ordering_among_rows_that_do_not_differ_is_not_resolved(tmp_path):
    """Means in the reverse of the paper's order, every pair within noise: no verdict either way (issue 34)."""
    groups = write_block(tmp_path, {"none": [4.0, 5.0, 4.5], "spatial_dropout": [4.6, 4.1, 5.1],
                                    "selectscale": [5.2, 4.2, 4.7]})
    (line,) = comparison_cells(groups, PAPER)
    assert line[6] == "not resolved: no pairwise difference significant at alpha 0.05 (3 pairs, Welch, two-sided)"
    text = render_markdown(groups, paper=PAPER)
    assert "ordering as paper (pairs with Welch p < 0.05)" in text and "not here" not in text


def test_an_ordering_is_yes_only_when_every_pair_is_separated_and_agrees(tmp_path):
    groups = write_block(tmp_path, {"none": [5.0, 5.1, 5.05], "spatial_dropout": [4.4, 4.5, 4.45],
                                    "selectscale": [3.9, 4.0, 3.95]})
    (line,) = comparison_cells(groups, PAPER)
    assert line[6] == "yes (all 3 pairs as in paper, each at alpha 0.05)"


def _power_by_simulation(difference: float, sd: float, n: int, draws: int = 40000) -> float:
    """The share of two-sided two-sample t-tests (alpha 0.05) that reject at a true ``difference``: Monte Carlo."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, sd, (draws, n))
    b = rng.normal(difference, sd, (draws, n))
    return float(np.mean(scipy_stats.ttest_ind(a, b, axis=1).pvalue < 0.05))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_minimum_detectable_difference_has_80_percent_power(n):
    mdd = minimum_detectable_difference(1.5, n)
    assert _power_by_simulation(mdd, 1.5, n) == pytest.approx(0.80, abs=0.01)
    assert _power_by_simulation(0.8 * mdd, 1.5, n) < 0.7  # and not much less suffices
    assert minimum_detectable_difference(3.0, n) == pytest.approx(2 * mdd)  # proportional to the SD


def test_the_minimum_detectable_difference_in_known_cases():
    # n = 5 a side: Cohen's d = 2.024 (G*Power's "t tests - means: two independent groups", 80%, two-tailed 0.05)
    assert minimum_detectable_difference(1.0, 5) == pytest.approx(2.0244, abs=5e-4)
    # large n: the normal approximation (z_0.975 + z_0.8) sd sqrt(2 / n)
    normal = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) * math.sqrt(2.0 / 5000)
    assert minimum_detectable_difference(1.0, 5000) == pytest.approx(normal, rel=1e-3)
    assert minimum_detectable_difference(1.0, 1) is None and minimum_detectable_difference(0.0, 5) is None
    assert pooled_sd([(1.0, 5), (2.0, 3), (9.0, 1)]) == pytest.approx(math.sqrt((4 * 1.0 + 2 * 4.0) / 6))


def test_the_minimum_detectable_difference_is_rendered_and_summarised(tmp_path):
    groups = write_block(tmp_path / "runs", {"none": [5.0, 5.2, 4.9], "spatial_dropout": [4.4, 4.5, 4.3],
                                             "selectscale": [3.9, 4.0, 3.8, 4.1]})
    design = block_power(groups)
    sd = pooled_sd([(entry.top1_std, entry.n) for entry in groups])
    assert design.n == 3 and design.rows == 3 and design.mdd == pytest.approx(minimum_detectable_difference(sd, 3))
    text = render_markdown(groups, paper=PAPER)
    assert f"wrn20_8: {design.mdd:.2f} pp (n = 3 a row, pooled SD {sd:.2f} pp over 3 rows)" in text
    assert "noncentral t distribution (scipy.stats.nct)" in text and r"80\% power" in render_latex(groups, paper=PAPER)
    path = write_summary(groups, tmp_path / "summary.json", {})
    payload = json.loads(path.read_text())
    (block,) = payload["minimum_detectable_difference"]
    assert block["block"] == "wrn20_8" and block["mdd"] == round(design.mdd, 4) and block["n_per_row"] == 3
    assert summary_power([path])["mdd"] == pytest.approx(minimum_detectable_difference(
        pooled_sd([(row["test_top1_error_std"], row["n"]) for row in payload["rows"]]), 3), abs=1e-3)


def _row(tmp_path, drop: dict, model: str = "resnet20"):
    result = make_result(0, 0.3, **{"config.model.name": model, "config.drop": drop})
    return collect([write_run(tmp_path, f"{model}-{'-'.join(map(str, drop.values()))}", result)]).rows[0]


def _maps_zeroed_by(layer, channels: int) -> int:
    """How many whole maps the real layer zeroes in one training forward of one sample with ``channels`` maps."""
    y = layer.train()(torch.rand(1, channels, 8, 8) + 0.1)
    return int((y.flatten(2).abs().amax(dim=2) == 0).sum())


def test_near_no_op_counts_use_the_layers_own_rounding(tmp_path):
    """ResNet-20's Selectout at top 0.2, retain 0.99 (results/mini_overfit/'s choice) drops round(0.16, 0.32,
    0.64) = 0, 0, 1 maps in its 16-, 32- and 64-channel layers: flagged; the real layer drops as many."""
    load = drop_load(_row(tmp_path, {"name": "selectout", "top_rate": 0.2, "retain_rate": 0.99}))
    assert len(load.layers) == 18 and load.by_channels() == {16: 0.0, 32: 0.0, 64: 1.0} and load.near_no_op
    for channels, maps in load.by_channels().items():
        assert _maps_zeroed_by(Selectout(0.2, 0.99), channels) == maps
    assert format_load(load) == "drops 0.33 maps a layer: 0/0/1 at C = 16/32/64 (18 layers); near no-op"
    retain98 = drop_load(_row(tmp_path, {"name": "selectout", "top_rate": 0.2, "retain_rate": 0.98}, "resnet8"))
    assert retain98.by_channels() == {16: 0.0, 32: 1.0, 64: 1.0} and len(retain98.layers) == 6
    assert [_maps_zeroed_by(Selectout(0.2, 0.98), c) for c in (16, 32, 64)] == [0, 1, 1]


def test_near_no_op_spatial_dropout_is_its_expected_count_and_scaling_is_never_flagged(tmp_path):
    mild = drop_load(_row(tmp_path, {"name": "spatial_dropout", "retain_rate": 0.98}))
    assert mild.by_channels() == pytest.approx({16: 0.32, 32: 0.64, 64: 1.28}) and mild.near_no_op
    chosen = drop_load(_row(tmp_path, {"name": "spatial_dropout", "retain_rate": 0.95}))
    assert chosen.mean == pytest.approx((0.8 + 1.6 + 3.2) / 3) and not chosen.near_no_op
    torch.manual_seed(0)
    zeroed = sum(_maps_zeroed_by(SpatialDropout(0.95), 64) for _ in range(400)) / 400
    assert zeroed == pytest.approx(3.2, abs=0.4)  # (1 - p) C maps in expectation
    scale = drop_load(_row(tmp_path, {"name": "selectscale", "top_rate": 0.1, "retain_rate": 0.9}))
    assert scale.by_channels() == {16: 2.0, 32: 3.0, 64: 6.0} and not scale.near_no_op
    assert drop_load(_row(tmp_path, {"name": "none"})) is None


def test_a_near_no_op_row_is_flagged_in_the_table_and_the_summary(tmp_path):
    for seed, error in enumerate((30.0, 31.0)):
        write_run(tmp_path / "runs", f"selectout{seed}", make_result(seed, error / 100, **{
            "config.model.name": "resnet20", "config.drop": {"name": "selectout", "top_rate": 0.2,
                                                              "retain_rate": 0.99}}))
    groups = group(collect([tmp_path / "runs"]).rows, by=("model", "drop"))
    header, body = table_cells(groups, None, None)
    flag = "near no-op: drops 0.33 maps a drop layer on average (< 1)"
    assert near_no_op_flag(groups[0]) == flag and flag in dict(zip(header, body[0], strict=True))["flags"]
    (row,) = json.loads(write_summary(groups, tmp_path / "summary.json", {}).read_text())["rows"]
    assert flag in row["flags"] and row["maps_per_drop_layer"]["near_no_op"] is True
    assert row["maps_per_drop_layer"]["by_channels"] == {"16": 0.0, "32": 0.0, "64": 1.0}


def test_extra_columns_best_epoch_and_range(tmp_path):
    groups = write_block(tmp_path, {"none": [5.0, 5.4]})
    for seed, best in enumerate((0.047, 0.049)):  # metrics.jsonl beside each result.json
        (tmp_path / f"none_seed{seed}" / "metrics.jsonl").write_text(
            f'{{"epoch": 1, "test_top1_error": 0.08, "train_top1_error": 0.3}}\n'
            f'{{"epoch": 2, "test_top1_error": {best}, "train_top1_error": 0.1}}\n')
    groups = group(collect([tmp_path]).rows, by=("model", "drop"))
    header, body = table_cells(groups, None, None, extra_columns=True)
    cells = dict(zip(header, body[0], strict=True))
    assert cells["best-epoch top-1 (%) (optimistic: chosen on test data)"] == "4.80 ± 0.14 (2)"
    assert cells["min-max over seeds (%)"] == "5.00-5.40"
    assert groups[0].rows[0].final_train_top1_error == 0.1 and groups[0].rows[0].test_curve == ((1, 0.08), (2, 0.047))
    assert groups[0].rows[0].train_curve == ((1, 0.3), (2, 0.1))
    assert cells["final train top-1 (%) mean (n)"] == "10.00 (2)"


def test_damaged_metrics_leave_the_row_but_not_the_extras(tmp_path):
    groups = write_block(tmp_path, {"none": [5.0, 5.4]})
    (tmp_path / "none_seed0" / "metrics.jsonl").write_text('{"epoch": 1, "test_top1_error": 0.0\n')
    groups = group(collect([tmp_path]).rows, by=("model", "drop"))
    assert groups[0].n == 2 and groups[0].rows[0].best_test_top1_error is None
    header, body = table_cells(groups, None, None, extra_columns=True)
    assert dict(zip(header, body[0], strict=True))["best-epoch top-1 (%) (optimistic: chosen on test data)"] == "n/a"


def _welch_from_summaries():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "welch_from_summaries.py"
    spec = importlib.util.spec_from_file_location("welch_from_summaries", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_script_gives_the_welch_interval_in_closed_form_and_each_pair_once():
    # n = 2 a side, equal stds: dof = 2, where the t quantile has a closed form: t_0.975 = 0.95 sqrt(2 / (1 - 0.95^2)).
    script = _welch_from_summaries()
    new = {"n": 2, "test_top1_error_mean": 4.0, "test_top1_error_std": math.sqrt(2.0)}
    reference = {"n": 2, "test_top1_error_mean": 1.0, "test_top1_error_std": math.sqrt(2.0)}
    diff, low, high, result = script.welch_from_stats(new, reference)
    half_width = 0.95 * math.sqrt(2.0 / (1.0 - 0.95**2)) * math.sqrt(2.0)
    assert diff == pytest.approx(3.0) and result.dof == pytest.approx(2.0)
    assert (low, high) == (pytest.approx(3.0 - half_width), pytest.approx(3.0 + half_width))
    assert result.p == pytest.approx(welch_test([3.0, 5.0], [0.0, 2.0]).p)
    assert (low < 0.0 < high) == (result.p > 0.05)
    rows = {"none": reference, "a": new, "b": new}
    assert list(script.pairs(rows, rows, one_file=True)) == [("a", "none"), ("b", "none"), ("b", "a")]
    assert len(list(script.pairs(rows, rows, one_file=False))) == 9
