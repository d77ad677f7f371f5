"""Significance of differences between methods: Welch's t-test over per-seed errors, and the paper's ordering.

Comparisons are made inside a *block*: the groups of a table that differ only in the drop method (one
network of Table 1, one schedule of Table 3). Within a block, "best other" is the lowest mean error among
the methods that are neither no drop nor SelectScale; "ordering as paper" compares every pair of rows that
have both a measured mean and a paper value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from .tables import Group

NO_DROP = "none"
SELECTIVE = "selectscale"
# Group keys that say which method a row is; the others (model, schedule, epochs, ...) identify its block.
METHOD_KEYS = frozenset({"row", "drop", "top_rate", "retain_rate"})
_LEADING_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)")


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


def ordering_as_paper(block: Sequence[Group], paper_values: dict[tuple, float | None], label) -> str:
    """``yes`` when every pair of rows is ordered as in the paper; else ``no: A < B in paper`` per reversed pair.

    Pairs the paper ties, and rows without a measured mean or a paper value, are not compared."""
    ranked = [(entry, paper_values.get(entry.key)) for entry in block]
    ranked = [(entry, value) for entry, value in ranked if value is not None and entry.top1_mean is not None
              and not entry.mixed_settings]
    if len(ranked) < 2:
        return "n/a (fewer than 2 rows with paper and measured values)"
    reversed_pairs = []
    for index, (first, paper_first) in enumerate(ranked):
        for second, paper_second in ranked[index + 1:]:
            if paper_first == paper_second:
                continue
            low, high = (first, second) if paper_first < paper_second else (second, first)
            if not low.top1_mean < high.top1_mean:
                reversed_pairs.append(f"{label(low)} < {label(high)} in paper, not here")
    return "yes" if not reversed_pairs else "no: " + "; ".join(reversed_pairs)
