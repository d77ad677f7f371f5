"""An evidence study's paired comparisons (issue 37): ``paired.md`` and summary.json's ``paired`` entry.

Every pair of rows of a block, later row minus earlier row (the spec's order: no drop first), seed by seed on the
test images and, where every run has one, on the evaluation pool (:mod:`selectscale.report.paired`). Per measure
the *design's* minimum detectable difference: the paired MDD at the smallest n of the comparisons with the SD of
the differences pooled over every pair (root mean square), next to the largest single pair's. The rows' test and
pool errors stand side by side; the pool is never used for choosing anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import stats
from .paired import PAIRED_METHOD, PairedResult, holm, measures_of, paired_compare, paired_mdd
from .render import block_label, group_label
from .tables import Group, format_mean_std, mean_and_std

MEASURE_TITLES = {"test": "test images", "pool": "evaluation pool (unused training images + test images)"}


def comparisons(groups: Sequence[Group]) -> list[PairedResult]:
    """Every pair of rows of every block, on every measure the runs have; pairs that cannot be made are left out."""
    found = []
    for measure in measures_of(groups):
        for block in stats.blocks(groups).values():
            for index, earlier in enumerate(block):
                for later in block[index + 1:]:
                    result = paired_compare(later, earlier, measure, (group_label(later), group_label(earlier)))
                    if result is not None:
                        found.append(result)
    return found


def holm_within_measure(results: Sequence[PairedResult]) -> list[float | None]:
    """Each comparison's paired p adjusted by Holm's method over the comparisons of its measure (one family a
    measure: the test images and the pool answer the same questions on overlapping images)."""
    adjusted: list[float | None] = [None] * len(results)
    for measure in dict.fromkeys(result.measure for result in results):
        chosen = [index for index, result in enumerate(results) if result.measure == measure]
        for index, value in zip(chosen, holm([results[index].p for index in chosen]), strict=True):
            adjusted[index] = value
    return adjusted


def design(results: Sequence[PairedResult]) -> dict | None:
    """The design's paired MDD (pp) for one measure's comparisons: n = their smallest n, SD pooled (RMS)."""
    usable = [result for result in results if result.sd_difference is not None and result.n >= 2]
    if not usable:
        return None
    n = min(result.n for result in usable)
    sd = math.sqrt(sum(result.sd_difference ** 2 for result in usable) / len(usable))
    worst = max((result.mdd for result in usable if result.mdd is not None), default=None)
    mdd = paired_mdd(sd, n)
    return {"n": n, "pairs_pooled": len(usable), "pooled_sd_difference": round(sd, 4), "mdd": _round(mdd),
            "largest_pair_mdd": _round(worst), "alpha": stats.ALPHA, "power": stats.POWER}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


def summary_entry(groups: Sequence[Group]) -> dict:
    """summary.json's ``paired``: the method, every comparison and each measure's design MDD."""
    found = comparisons(groups)
    adjusted = holm_within_measure(found)
    return {
        "method": PAIRED_METHOD, "units": "percentage points (first minus second)",
        "comparisons": [{"first": r.first, "second": r.second, "measure": r.measure, "n": r.n, "seeds": list(r.seeds),
                         "mean_difference": _round(r.mean_difference), "sd_difference": _round(r.sd_difference),
                         "ci95": None if r.ci is None else [_round(r.ci[0]), _round(r.ci[1])],
                         "p_paired": _round(r.p), "p_holm": _round(p_holm), "p_welch": _round(r.welch_p),
                         "mdd": _round(r.mdd), "machine_kinds": list(r.kind.kinds), "machine_kind_p": _round(r.kind.p)}
                        for r, p_holm in zip(found, adjusted, strict=True)],
        "design": {measure: design([r for r in found if r.measure == measure]) for measure in measures_of(groups)},
    }


def _p(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _errors(entry: Group, pool: bool) -> str:
    values = [row.pool_top1_error if pool else row.test_top1_error for row in entry.rows]
    if entry.mixed_settings or any(value is None for value in values):
        return "n/a"
    return format_mean_std(*mean_and_std([100.0 * value for value in values]), entry.n)


def render_paired(groups: Sequence[Group], title: str, provenance: Sequence[str]) -> str:
    """``paired.md``: the rows' errors on each measure, every paired comparison, each measure's design MDD."""
    measures, found = measures_of(groups), comparisons(groups)
    pool = "pool" in measures
    lines = [f"# {title}: rows compared seed by seed", "", *provenance, ""]
    header = ["row", "block", "test error (%) mean ± std (n)"] + (["pool error (%) mean ± std (n)", "pool images"]
                                                                  if pool else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in groups:
        cells = [group_label(entry), block_label(stats.block_key(entry)), _errors(entry, False)]
        if pool:
            cells += [_errors(entry, True), str(entry.rows[0].pool[2] + entry.rows[0].pool[3])]
        lines.append("| " + " | ".join(cells) + " |")
    for measure in measures:
        chosen = [result for result in found if result.measure == measure]
        adjusted = holm([result.p for result in chosen])  # one family a measure, as holm_within_measure
        lines += ["", f"## On the {MEASURE_TITLES[measure]}", "",
                  "| first minus second | n pairs | mean difference (pp) | 95% CI (pp) | paired p "
                  f"| Holm p (family of {len(chosen)}) | Welch p (same seeds) "
                  "| min. detectable diff. (pp), paired, 80% power |",
                  "|---|---|---|---|---|---|---|---|"]
        for r, p_holm in zip(chosen, adjusted, strict=True):
            ci = "n/a" if r.ci is None else f"[{r.ci[0]:+.2f}, {r.ci[1]:+.2f}]"
            mdd = "n/a" if r.mdd is None else f"{r.mdd:.2f}"
            lines.append(f"| {r.first} − {r.second} | {r.n} | {r.mean_difference:+.2f} | {ci} | {_p(r.p)} | "
                         f"{_p(p_holm)} | {_p(r.welch_p)} | {mdd} |")
        plan = design(chosen)
        if plan and plan["mdd"] is not None:
            lines += ["", f"Design: a paired difference of **{plan['mdd']:.2f} pp** is detected with 80% power at "
                      f"two-sided alpha 0.05 (n = {plan['n']} pairs, SD of the differences "
                      f"{plan['pooled_sd_difference']:.2f} pp, pooled over {plan['pairs_pooled']} pairs; the largest "
                      "single pair's: "
                      f"{plan['largest_pair_mdd']:.2f} pp). A true difference below it is missed more than one time in "
                      "five; a p-value above 0.05 is not evidence of no difference."]
        kinds = {result.kind.line() for result in chosen}
        lines += ["", "Machine kind: " + "; ".join(sorted(kinds)) + "." if kinds else ""]
    lines += ["", f"Method: {PAIRED_METHOD}; Holm's step-down adjustment of the paired p over each measure's "
              "comparisons (one family a measure: a Holm p below 0.05 keeps the chance of any false positive in the "
              "table at most 5%); Welch's test over the same seeds for comparison."]
    return "\n".join(lines).rstrip() + "\n"
