"""Any finished runs side by side: ``selectscale-experiments compare RUN_DIR...`` (the day-to-day comparison).

The runs are grouped by the settings that differ between them (seeds averaged within a group, as the tables
do); each group gets its mean ± std and Welch's test against the first group. Nothing here knows about the
paper's tables: any result.json under the given folders counts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from . import stats
from .collect import RunRow, collect
from .tables import differing_setting_keys, format_measured, group

_MISSING = "—"


def _percent(value: float | None) -> str:
    return _MISSING if value is None else f"{100 * value:.2f}"


def _setting_label(row: RunRow, keys: Sequence[str]) -> str:
    values = row.setting_dict()
    return ", ".join(f"{key}={values.get(key, _MISSING)}" for key in keys) or "(one setting)"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]


def compare_runs(roots: Sequence[Path]) -> str:
    """Markdown: every run (seed, the differing settings, errors in %), then the groups with Welch p-values."""
    collection = collect(list(roots))
    rows = sorted(collection.rows, key=lambda row: (str(row.setting), row.seed, str(row.path)))
    if not rows:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in collection.skipped[:3])
        raise ValueError(f"no finished run under {', '.join(map(str, roots))}" + (f" ({reasons})" if reasons else ""))
    keys = differing_setting_keys(rows)
    lines = [f"## {len(rows)} runs compared", "",
             f"Settings that differ: {', '.join(keys) if keys else 'none (every run has the same setting)'}. "
             "Errors: last epoch, percent.", ""]
    lines += _table(["run", "seed", *keys, "test top-1", "test top-5", "final train top-1"],
                    [[str(row.path.parent), str(row.seed), *(str(row.setting_dict().get(k, _MISSING)) for k in keys),
                      _percent(row.test_top1_error), _percent(row.test_top5_error),
                      _percent(row.final_train_top1_error)] for row in rows])
    buckets: dict[str, list[RunRow]] = {}
    for row in rows:
        buckets.setdefault(_setting_label(row, keys), []).append(row)
    groups = [(label, group(members, by=())[0]) for label, members in buckets.items()]
    reference_label, reference = groups[0]
    body = []
    for label, entry in groups:
        result = None if entry is reference else stats.compare(entry, reference)
        test = "—" if entry is reference else ("n/a (< 2 seeds a side)" if result is None else
                                               f"t={result.t:.2f}, dof={result.dof:.1f}, {stats.format_p(result)}")
        body.append([label, format_measured(entry), test])
    lines += ["", f"Groups (Welch's two-sided t-test of the per-seed top-1 errors against the first group, "
              f"{reference_label}):", ""]
    lines += _table(["setting", "test top-1 (%) mean ± std (n)", "vs the first group"], body)
    if collection.skipped:
        lines += ["", f"Left out {len(collection.skipped)} result file(s):"]
        lines += [f"- {path}: {reason}" for path, reason in collection.skipped]
    return "\n".join(lines) + "\n"


def print_comparison(roots: Sequence[Path]) -> int:
    """The command: the comparison on stdout (status 0), or one line on stderr (status 2)."""
    try:
        print(compare_runs(roots), end="")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
