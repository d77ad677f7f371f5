"""Welch's t-test between the rows of two evidence summaries (``results/NAME/summary.json``), from their means,
standard deviations and n: for rows run in different sessions, whose run folders are not all on one machine.

    python scripts/welch_from_summaries.py results/mini_cifar10/summary.json \\
        results/mini_cifar10_dropblock/summary.json

Prints, for every row of the second file against every row of the first: the difference of the mean test
top-1 errors (percentage points), its 95% confidence interval (Welch-Satterthwaite t interval: the range of
true differences the data do not reject at the 5% level, the figure to quote when p is large) and Welch's
two-sided p (as the tables print it: p=0.012, p<0.001). Pass one file twice to compare the rows of one study
with each other (each pair once, the later row first). Runs
from different sessions may differ by machine (not bit-identical without trainer.deterministic): say so beside
any p printed here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy import stats

from selectscale.report.stats import WelchResult, format_p


def rows(path: Path) -> dict[str, dict]:
    return {row["method"]: row for row in json.loads(path.read_text())["rows"]}


def welch_from_stats(new: dict, reference: dict) -> tuple[float, float, float, WelchResult]:
    """Welch's test of two summary rows (percent): diff (new minus reference, pp), 95% CI low and high, result."""
    n_new, n_ref = new["n"], reference["n"]
    a, b = new["test_top1_error_std"] ** 2 / n_new, reference["test_top1_error_std"] ** 2 / n_ref
    result = stats.ttest_ind_from_stats(new["test_top1_error_mean"], new["test_top1_error_std"], n_new,
                                        reference["test_top1_error_mean"], reference["test_top1_error_std"], n_ref,
                                        equal_var=False)
    dof = (a + b) ** 2 / (a**2 / (n_new - 1) + b**2 / (n_ref - 1))  # Welch-Satterthwaite
    diff = new["test_top1_error_mean"] - reference["test_top1_error_mean"]
    half_width = stats.t.ppf(0.975, dof) * (a + b) ** 0.5
    return diff, diff - half_width, diff + half_width, WelchResult(result.statistic, dof, result.pvalue)


def pairs(reference: dict[str, dict], new: dict[str, dict], one_file: bool):
    """Every (new, reference) pair; for one file passed twice, each pair of different rows once."""
    names = list(reference)
    for name in new:
        for reference_name in reference:
            if one_file and names.index(reference_name) >= names.index(name):
                continue
            yield name, reference_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="summary.json with the rows to compare against")
    parser.add_argument("new", type=Path, help="summary.json with the new rows")
    args = parser.parse_args()
    reference_rows, new_rows = rows(args.reference), rows(args.new)
    print("| new row | reference row | diff (pp) | 95% CI (pp) | Welch t | dof | p |")
    print("|---|---|---|---|---|---|---|")
    for name, reference_name in pairs(reference_rows, new_rows, args.reference.resolve() == args.new.resolve()):
        new, reference = new_rows[name], reference_rows[reference_name]
        if new["n"] < 2 or reference["n"] < 2:
            print(f"| {name} | {reference_name} | n/a | n/a | n/a | n/a | n/a (fewer than 2 seeds) |")
            continue
        diff, low, high, result = welch_from_stats(new, reference)
        print(f"| {name} ({new['n']}) | {reference_name} ({reference['n']}) | {diff:+.2f} | "
              f"[{low:+.2f}, {high:+.2f}] | {result.t:.2f} | {result.dof:.1f} | {format_p(result)} |")


if __name__ == "__main__":
    main()
