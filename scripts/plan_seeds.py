"""Plan a paired study's seeds from a pilot (issue 37): how many seeds a row give a paired minimum detectable
difference of at most TARGET points on the evaluation pool.

    python scripts/plan_seeds.py results/mini_overfit_pool/runs/none --seeds 4 --target 1.0

Reads the result.json of seeds 0 to SEEDS - 1 under the folder (the pilot's runs of one row; each must hold
``eval_pool``; the row's later seeds, trained by the study itself, are not read), prints each
seed's test, unused-image and pool errors, their seed-to-seed SDs, and the planned n: the fewest seeds whose paired
MDD (80% power, two-sided alpha 0.05; selectscale.report.paired.paired_mdd) is <= TARGET when the SD of a paired
difference is sqrt(2 (1 - rho)) times the pilot's SD of the pool error. The plan takes rho = 0 (rows of a seed
no more alike than rows of two seeds: the pilot, one row only, cannot measure rho); the other lines show what a
correlation, or the pilot SD's 80% upper confidence bound (3 degrees of freedom only), would change.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

from selectscale.report.paired import paired_mdd, seeds_for


def pilot_errors(folder: Path, seeds: int) -> list[tuple[int, float, float, float]]:
    """(seed, test, unused, pool) errors in percent of the runs ``folder/seed<k>`` for k < ``seeds``, by seed."""
    rows = []
    for path in [folder / f"seed{seed}" / "result.json" for seed in range(seeds)]:
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: the pilot needs seeds 0 to {seeds - 1}")
        result = json.loads(path.read_text())
        pool = result.get("eval_pool")
        if result.get("complete") is not True or not isinstance(pool, dict):
            raise SystemExit(f"error: {path} is not a finished run with an evaluation pool (eval_pool)")
        rows.append((int(result["seed"]), 100 * result["test_top1_error"], 100 * pool["unused_top1_error"],
                     100 * pool["top1_error"]))
    if len(rows) < 2:
        raise SystemExit(f"error: {folder} holds {len(rows)} finished runs; a pilot needs at least 2")
    return sorted(rows)


def plan_lines(rows: list[tuple[int, float, float, float]], target: float) -> list[str]:
    sds = [statistics.stdev(column) for column in list(zip(*rows, strict=True))[1:]]
    pool_sd, dof = sds[2], len(rows) - 1
    upper = pool_sd * math.sqrt(dof / stats.chi2.ppf(0.20, dof))  # 80% upper confidence bound of the SD
    lines = ["| seed | test error (%) | unused training images error (%) | pool error (%) |", "|---|---|---|---|"]
    lines += [f"| {seed} | {test:.2f} | {unused:.2f} | {pool:.2f} |" for seed, test, unused, pool in rows]
    lines += [f"| SD over seeds | {sds[0]:.2f} | {sds[1]:.2f} | {pool_sd:.2f} |", "",
              f"Seeds a row for a paired MDD <= {target:g} pp on the pool (80% power, two-sided alpha 0.05):", ""]
    for label, sd_row, rho in (("**plan**: pilot SD, rho = 0", pool_sd, 0.0), ("pilot SD, rho = 0.2", pool_sd, 0.2),
                               ("pilot SD, rho = 0.5", pool_sd, 0.5),
                               ("80% upper bound of the SD, rho = 0", upper, 0.0)):
        sd_difference = sd_row * math.sqrt(2 * (1 - rho))
        n = seeds_for(sd_difference, target)
        mdd = None if n is None else paired_mdd(sd_difference, n)
        lines.append(f"- {label}: SD of a difference {sd_difference:.2f} pp -> n = {n if n else '> 200'}"
                     + ("" if mdd is None else f" (MDD {mdd:.2f} pp)"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the pilot's runs (one row), e.g. results/STUDY/runs/none")
    parser.add_argument("--seeds", type=int, default=4, help="the pilot's seeds: 0 to SEEDS - 1 (default 4)")
    parser.add_argument("--target", type=float, default=1.0, help="the MDD to reach, percentage points")
    args = parser.parse_args(argv)
    print("\n".join(plan_lines(pilot_errors(args.folder, args.seeds), args.target)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
