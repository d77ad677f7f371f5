"""Welch's t-test, the p-value columns and the per-block comparisons of every rendered table (issue 12)."""

from __future__ import annotations

import math

import pytest
from report_fixtures import make_result, write_run

from selectscale.report import collect, comparison_cells, group, render_latex, render_markdown, table_cells, welch_test
from selectscale.report.stats import format_p, ordering_as_paper, paper_number


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
    assert line[0] == "wrn20_8" and line[1] == "selectscale" and line[3] == "spatial_scale" and line[5] == "yes"
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


def test_ordering_names_the_pairs_that_differ(tmp_path):
    groups = write_block(tmp_path, {"none": [4.0, 4.1], "spatial_scale": [4.5, 4.6], "selectscale": [4.3, 4.2]})
    (line,) = comparison_cells(groups, PAPER)
    assert line[5].startswith("no: ")
    assert "spatial_scale < none in paper, not here" in line[5] and "selectscale < none in paper, not here" in line[5]
    assert "selectscale < spatial_scale" not in line[5]  # that pair is ordered as in the paper
    assert ordering_as_paper(groups[:1], {}, str).startswith("n/a")


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
