"""Rows compared seed by seed (issue 37): the paired t-test, its confidence interval and minimum detectable
difference, next to Welch's test, on the test images and, where the runs have one, the evaluation pool.

In a study the seed fixes the initialization and the data order of every row, so the runs of two rows that share
a seed form a pair; the difference of each pair removes what the seed does to both. :func:`paired_compare` tests
the mean of those differences (``scipy.stats.ttest_rel``, two-sided; its t interval at 1 - :data:`ALPHA`), and
gives the minimum detectable difference of that design (:func:`paired_mdd`: the one-sample t-test on the n
differences, dof n - 1, power from the noncentral t, as :func:`selectscale.report.stats.minimum_detectable_difference`
for two samples). Only seeds both rows have are paired; a seed twice in a row (a duplicate) is not paired.

A seed is a block (issue 37): all rows of a seed ran on one machine kind (result.json ``environment``), seeds may
have run on different kinds. :func:`kind_effect` says whether the kind explains any of the differences: with two
or more kinds, a one-way ANOVA of the paired differences by kind (``scipy.stats.f_oneway``; for two kinds the
pooled two-sample t-test); with one kind, that one kind ran every pair.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from .collect import RunRow
from .stats import ALPHA, POWER, detectable_difference, welch_test
from .tables import Group

# What a comparison is measured on: the run's last-epoch test error, or its evaluation-pool error (fractions).
MEASURES: dict[str, Callable[[RunRow], float | None]] = {
    "test": lambda row: row.test_top1_error,
    "pool": lambda row: row.pool_top1_error,
}
NO_SPREAD = 1e-9  # pp: differences closer than this are equal (float noise of percent errors: ~1e-14)
PAIRED_METHOD = ("paired t-test over the seeds both rows ran (scipy.stats.ttest_rel, two-sided), its t interval; "
                 "minimum detectable difference of the one-sample t-test on the n differences (dof n - 1, power "
                 "from the noncentral t)")


@dataclass(frozen=True)
class KindEffect:
    """Whether the machine kind explains the paired differences: ``kinds`` seen, ANOVA ``p`` (None: one kind)."""

    kinds: tuple[str, ...]
    p: float | None

    def line(self) -> str:
        if self.p is None:
            return f"one machine kind ran every pair ({self.kinds[0] if self.kinds else 'unrecorded'})"
        return f"{len(self.kinds)} machine kinds; the kind's effect on the differences: one-way ANOVA p={self.p:.3f}"


@dataclass(frozen=True)
class PairedResult:
    """``first`` minus ``second`` on ``measure``, in percentage points, over ``n`` paired seeds."""

    first: str
    second: str
    measure: str
    seeds: tuple[int, ...]
    mean_difference: float
    sd_difference: float | None
    ci: tuple[float, float] | None
    p: float | None
    welch_p: float | None
    mdd: float | None
    kind: KindEffect

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_mdd(sd: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` finds with probability ``power``,
    over ``n`` pairs whose differences have standard deviation ``sd``; None below 3 pairs (at 1 degree of freedom
    the noncentral t's tails are not computable to the precision needed) or without spread."""
    if n < 3 or sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    return detectable_difference(sd / math.sqrt(n), n - 1, alpha, power)


def seeds_for(sd: float, target: float, alpha: float = ALPHA, power: float = POWER, most: int = 200) -> int | None:
    """The fewest pairs whose paired minimum detectable difference is at most ``target`` (None above ``most``)."""
    return next((n for n in range(3, most + 1) if (mdd := paired_mdd(sd, n, alpha, power)) and mdd <= target), None)


def _by_seed(entry: Group, measure: str) -> dict[int, RunRow]:
    """The group's runs by seed, leaving out seeds it has twice and runs without the measure."""
    counts: dict[int, int] = {}
    for row in entry.rows:
        counts[row.seed] = counts.get(row.seed, 0) + 1
    return {row.seed: row for row in entry.rows if counts[row.seed] == 1 and MEASURES[measure](row) is not None}


def kind_effect(differences: Sequence[float], kinds: Sequence[str | None]) -> KindEffect:
    """One-way ANOVA of ``differences`` grouped by machine kind (None: unrecorded, a kind of its own)."""
    names = tuple(dict.fromkeys(str(kind) for kind in kinds))
    if len(names) < 2:
        return KindEffect(names, None)
    samples = [[value for value, kind in zip(differences, kinds, strict=True) if str(kind) == name] for name in names]
    if len(differences) <= len(names):  # no within-kind degrees of freedom
        return KindEffect(names, math.nan)
    return KindEffect(names, float(scipy_stats.f_oneway(*samples).pvalue))


def paired_compare(first: Group, second: Group, measure: str, labels: tuple[str, str]) -> PairedResult | None:
    """``first`` minus ``second`` seed by seed on ``measure`` (pp); None when fewer than 2 seeds pair up or
    either group mixes settings (or, for the pool, pools)."""
    if first.mixed_settings or second.mixed_settings:
        return None
    a, b = _by_seed(first, measure), _by_seed(second, measure)
    seeds = tuple(sorted(set(a) & set(b)))
    if measure == "pool" and len({row.pool for row in (*a.values(), *b.values())}) > 1:
        return None  # runs scored on different pools are not compared
    if len(seeds) < 2:
        return None
    value = MEASURES[measure]
    pairs = [(100.0 * value(a[seed]), 100.0 * value(b[seed])) for seed in seeds]
    differences = [x - y for x, y in pairs]
    sd = statistics.stdev(differences)
    p, ci = None, None
    if sd > NO_SPREAD:
        test = scipy_stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
        p = float(test.pvalue)
        interval = test.confidence_interval(1.0 - ALPHA)
        ci = (float(interval.low), float(interval.high))
    welch = welch_test([x for x, _ in pairs], [y for _, y in pairs])
    return PairedResult(labels[0], labels[1], measure, seeds, statistics.fmean(differences), sd, ci, p,
                        None if welch is None else welch.p, paired_mdd(sd, len(seeds)) if sd > NO_SPREAD else None,
                        kind_effect(differences, [a[seed].machine for seed in seeds]))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``p_values`` as one family (None: not tested, left out of the family):
    the k-th smallest of m p-values times (m - k + 1), never below the one before it, at most 1. It controls the
    chance of any false positive among the family at alpha, whatever the tests' dependence."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None and math.isfinite(p))
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def measures_of(groups: Sequence[Group]) -> list[str]:
    """``["test"]``, plus ``"pool"`` when every run of the groups has a pool error."""
    pooled = all(row.pool_top1_error is not None for entry in groups for row in entry.rows)
    return ["test", "pool"] if pooled and groups else ["test"]
