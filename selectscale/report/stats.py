"""Significance of differences between methods: Welch's t-test over per-seed errors, the paper's ordering, and
the smallest difference a design can detect.

Comparisons are made inside a *block*: the groups of a table that differ only in the drop method (one
network of Table 1, one schedule of Table 3). Within a block, "best other" is the lowest mean error among
the methods that are neither no drop nor SelectScale; "ordering as paper" compares every pair of rows that
have both a measured mean and a paper value, and counts a pair as ordered (as in the paper or against it)
only when Welch's test separates it at :data:`ALPHA`; the rest are "not resolved".

The minimum detectable difference (:func:`minimum_detectable_difference`) is the true difference between two
rows of ``n`` runs each that a two-sided two-sample t-test at :data:`ALPHA` finds with probability
:data:`POWER`, given the standard deviation of one run: the t-test with equal n a side and equal variances
(Welch's test reduces to it, with 2n - 2 degrees of freedom), its power from the noncentral t distribution
(``scipy.stats.nct``), solved for the difference with ``scipy.optimize.brentq``. :func:`block_power` applies
it to a block: n = the smallest n of its rows, the SD pooled over its rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, stats

from .tables import Group

NO_DROP = "none"
SELECTIVE = "selectscale"
# Group keys that say which method a row is; the others (model, schedule, epochs, ...) identify its block.
METHOD_KEYS = frozenset({"row", "drop", "top_rate", "retain_rate"})
_LEADING_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)")
ALPHA = 0.05  # two-sided significance level of the ordering verdicts and of the minimum detectable difference
POWER = 0.80  # the power at which the minimum detectable difference is stated
MDD_METHOD = ("two-sample t-test, two-sided, n runs a side and the pooled SD (Welch's test at equal n and "
              "variances, dof 2n - 2); power from the noncentral t distribution (scipy.stats.nct), solved for the "
              "difference with scipy.optimize.brentq")


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test: statistic ``t``, Welch-Satterthwaite ``dof``, two-sided ``p``."""

    t: float
    dof: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float]) -> WelchResult | None:
    """Welch's t-test of two samples (e.g. per-seed test errors); None when it is undefined.

    Undefined: fewer than 2 values on a side, or both sides without spread (every value equal), where the
    statistic is 0/0. One side without spread is fine (the other side's variance carries the test).
    """
    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return None
    result = stats.ttest_ind(list(a), list(b), equal_var=False)
    if not math.isfinite(result.statistic) or not math.isfinite(result.pvalue):
        return None
    return WelchResult(float(result.statistic), float(result.df), float(result.pvalue))


def format_p(result: WelchResult | None) -> str:
    """``p=0.012``, ``p<0.001``, or ``n/a`` (fewer than 2 seeds a side, or no spread at all)."""
    if result is None:
        return "n/a"
    return "p<0.001" if result.p < 0.001 else f"p={result.p:.3f}"


def group_errors(entry: Group) -> list[float] | None:
    """The per-seed top-1 errors (%) of a group, or None when its runs may not be averaged."""
    if entry.mixed_settings or entry.top1_mean is None:
        return None
    return [100.0 * row.test_top1_error for row in entry.rows]


def compare(a: Group, b: Group | None) -> WelchResult | None:
    """Welch's test of two groups' per-seed errors; None when either is missing or not averageable."""
    if b is None:
        return None
    first, second = group_errors(a), group_errors(b)
    return None if first is None or second is None else welch_test(first, second)


def _value(entry: Group, name: str):
    return dict(zip(entry.by, entry.key, strict=True)).get(name)


def block_key(entry: Group) -> tuple:
    """The group's key without the keys that name its method: equal for rows that compete with each other."""
    return tuple(value for name, value in zip(entry.by, entry.key, strict=True) if name not in METHOD_KEYS)


def drop_name(entry: Group) -> str:
    """The drop method of a group (from its rows; every row of a group has the same one)."""
    return entry.rows[0].drop


def blocks(groups: Sequence[Group]) -> dict[tuple, list[Group]]:
    """Groups keyed by :func:`block_key`, in the order they come."""
    found: dict[tuple, list[Group]] = {}
    for entry in groups:
        found.setdefault(block_key(entry), []).append(entry)
    return found


def no_drop_of(block: Sequence[Group]) -> Group | None:
    return next((entry for entry in block if drop_name(entry) == NO_DROP), None)


def best_other(block: Sequence[Group], exclude: Group | None = None) -> Group | None:
    """The lowest-mean group that is neither no drop nor SelectScale (nor ``exclude``); None if there is none."""
    candidates = [entry for entry in block if entry is not exclude and drop_name(entry) not in (NO_DROP, SELECTIVE)
                  and entry.top1_mean is not None and not entry.mixed_settings]
    return min(candidates, key=lambda entry: entry.top1_mean, default=None)


def paper_number(text: str | None) -> float | None:
    """The leading number of a paper cell (``"5.22 ± 0.08"`` -> 5.22); None for ``—`` or ``figure only``."""
    match = _LEADING_NUMBER.match(text or "")
    return float(match.group(1)) if match else None


def _ordered_pairs(block: Sequence[Group], paper_values: dict[tuple, float | None]) -> list[tuple[Group, Group]]:
    """Every pair (lower in the paper, higher in the paper) of rows with a paper value and a measured mean; pairs
    the paper ties are left out."""
    ranked = [(entry, paper_values.get(entry.key)) for entry in block]
    ranked = [(entry, value) for entry, value in ranked if value is not None and entry.top1_mean is not None
              and not entry.mixed_settings]
    pairs = []
    for index, (first, paper_first) in enumerate(ranked):
        for second, paper_second in ranked[index + 1:]:
            if paper_first != paper_second:
                pairs.append((first, second) if paper_first < paper_second else (second, first))
    return pairs


def ordering_as_paper(block: Sequence[Group], paper_values: dict[tuple, float | None], label,
                      alpha: float = ALPHA) -> str:
    """Whether the block's rows are ordered as in the paper, counting only the pairs Welch's test separates.

    A pair is *resolved* when Welch's two-sided p < ``alpha``; its measured order then agrees with the paper's or
    reverses it. ``not resolved: ...`` when no pair is; ``yes (...)`` when every pair is resolved and agrees;
    ``no: A < B in paper, reversed here (p)`` for each resolved reversal; ``in part: ...`` when the resolved pairs
    agree but some are not resolved. The count of unresolved pairs always follows. Pairs the paper ties, and
    rows without a measured mean or a paper value, are not compared."""
    ranked = [entry for entry in block if paper_values.get(entry.key) is not None and entry.top1_mean is not None
              and not entry.mixed_settings]
    if len(ranked) < 2:
        return "n/a (fewer than 2 rows with paper and measured values)"
    pairs = _ordered_pairs(block, paper_values)
    if not pairs:
        return "n/a (the paper ties every pair)"
    agreed, reversed_pairs, unresolved = [], [], 0
    for low, high in pairs:
        result = compare(low, high)
        if result is None or not result.p < alpha:
            unresolved += 1
        elif low.top1_mean < high.top1_mean:
            agreed.append(f"{label(low)} < {label(high)} as in paper ({format_p(result)})")
        else:
            reversed_pairs.append(f"{label(low)} < {label(high)} in paper, reversed here ({format_p(result)})")
    total = len(pairs)
    if not agreed and not reversed_pairs:
        return (f"not resolved: no pairwise difference significant at alpha {alpha:g} ({total} pair"
                f"{'s' if total > 1 else ''}, Welch, two-sided)")
    tail = "" if not unresolved else (f"; {unresolved} of {total} pairs not resolved (not significant at "
                                      f"alpha {alpha:g}, or p n/a)")
    if reversed_pairs:
        return "no: " + "; ".join(reversed_pairs) + (
            f"; {len(agreed)} of {total} pairs as in paper" if agreed else "") + tail
    if not unresolved:
        return f"yes (all {total} pairs as in paper, each at alpha {alpha:g})"
    return "in part: " + "; ".join(agreed) + tail


def minimum_detectable_difference(sd: float | None, n: int, alpha: float = ALPHA,
                                  power: float = POWER) -> float | None:
    """The smallest true difference between two rows of ``n`` runs each that a two-sided two-sample t-test at
    ``alpha`` detects with probability ``power``, for runs with standard deviation ``sd`` (same unit); None
    below 2 runs a side or without a positive ``sd``.

    The t-test has 2n - 2 degrees of freedom (Welch's test at equal n and equal variances); under a true
    difference d its statistic follows the noncentral t with noncentrality d / (sd sqrt(2 / n)), and the power
    is P(T > t_crit) + P(T < -t_crit). The noncentrality that gives ``power`` is found with brentq."""
    if n < 2 or sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    return detectable_difference(sd * math.sqrt(2.0 / n), 2 * n - 2, alpha, power)


def detectable_difference(standard_error: float, dof: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true difference a two-sided t-test at ``alpha`` with ``dof`` degrees of freedom detects with
    probability ``power`` when its estimate has ``standard_error``: the noncentrality that gives ``power`` (brentq
    on the noncentral t's two tails), times the standard error. Two samples: se = sd sqrt(2 / n), dof 2n - 2;
    paired (:mod:`selectscale.report.paired`): se = sd of the differences / sqrt(n), dof n - 1."""
    critical = float(stats.t.ppf(1.0 - alpha / 2.0, dof))

    def shortfall(noncentrality: float) -> float:
        reach = stats.nct.sf(critical, dof, noncentrality) + stats.nct.cdf(-critical, dof, noncentrality)
        return float(reach) - power

    upper = 1.0
    while shortfall(upper) < 0.0:
        upper *= 2.0
    return optimize.brentq(shortfall, 0.0, upper, xtol=1e-10) * standard_error


def pooled_sd(stds: Sequence[tuple[float, int]]) -> float | None:
    """sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1)) over ``(s_i, n_i)`` with n_i >= 2; None when there is none."""
    usable = [(std, n) for std, n in stds if n >= 2 and std is not None]
    dof = sum(n - 1 for _, n in usable)
    return None if dof == 0 else math.sqrt(sum((n - 1) * std * std for std, n in usable) / dof)


@dataclass(frozen=True)
class DesignPower:
    """A block's minimum detectable difference: n a row (its smallest), rows pooled, pooled SD and MDD (pp)."""

    n: int
    rows: int
    pooled_sd: float
    mdd: float
    alpha: float = ALPHA
    power: float = POWER


def block_power(block: Sequence[Group], alpha: float = ALPHA, power: float = POWER) -> DesignPower | None:
    """The minimum detectable difference between two rows of ``block``: n = the smallest n of its averageable
    rows with >= 2 runs, SD pooled over them; None with fewer than 2 such rows."""
    rows = [entry for entry in block if entry.top1_std is not None and not entry.mixed_settings and entry.n >= 2]
    if len(rows) < 2:
        return None
    sd = pooled_sd([(entry.top1_std, entry.n) for entry in rows])
    n = min(entry.n for entry in rows)
    mdd = minimum_detectable_difference(sd, n, alpha, power)
    return None if sd is None or mdd is None else DesignPower(n, len(rows), sd, mdd, alpha, power)


def format_power(design: DesignPower) -> str:
    """``3.05 pp (n = 5 a row, pooled SD 1.50 pp over 5 rows)``."""
    return (f"{design.mdd:.2f} pp (n = {design.n} a row, pooled SD {design.pooled_sd:.2f} pp over "
            f"{design.rows} rows)")
