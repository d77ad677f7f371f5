"""Welch's t-test between the rows of two evidence summaries (``results/NAME/summary.json``), from their means,
standard deviations and n: for rows run in different sessions, whose run folders are not all on one machine.

    python scripts/welch_from_summaries.py results/mini_cifar10/summary.json \\
        results/mini_cifar10_dropblock/summary.json

Prints, for every row of the second file against every row of the first: the difference of the mean test
top-1 errors (percentage points) and Welch's two-sided p (as the tables print it: p=0.012, p<0.001). Runs
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="summary.json with the rows to compare against")
    parser.add_argument("new", type=Path, help="summary.json with the new rows")
    args = parser.parse_args()
    print("| new row | reference row | diff (pp) | Welch t | dof | p |")
    print("|---|---|---|---|---|---|")
    for name, new in rows(args.new).items():
        for reference_name, reference in rows(args.reference).items():
            if new["n"] < 2 or reference["n"] < 2:
                print(f"| {name} | {reference_name} | n/a | n/a | n/a | n/a (fewer than 2 seeds) |")
                continue
            result = stats.ttest_ind_from_stats(new["test_top1_error_mean"], new["test_top1_error_std"], new["n"],
                                                reference["test_top1_error_mean"], reference["test_top1_error_std"],
                                                reference["n"], equal_var=False)
            a, b = new["test_top1_error_std"] ** 2 / new["n"], reference["test_top1_error_std"] ** 2 / reference["n"]
            dof = (a + b) ** 2 / (a**2 / (new["n"] - 1) + b**2 / (reference["n"] - 1))
            diff = new["test_top1_error_mean"] - reference["test_top1_error_mean"]
            p_text = format_p(WelchResult(result.statistic, dof, result.pvalue))
            print(f"| {name} ({new['n']}) | {reference_name} ({reference['n']}) | {diff:+.2f} | "
                  f"{result.statistic:.2f} | {dof:.1f} | {p_text} |")


if __name__ == "__main__":
    main()
