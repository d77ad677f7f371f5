"""Render groups as Markdown or LaTeX tables: measured errors beside the paper's, Welch p-values, and a
comparison per block (SelectScale against no drop and against the best other method, the paper's ordering).

Columns added for issue 12: ``p vs no drop`` and ``p vs best other`` on every row (Welch's two-sided test over
per-seed errors, "n/a" below 2 seeds a side); with ``extra_columns`` also the best-epoch error (marked
optimistic: it is chosen on the test data) and the min-max over seeds.

``run_states`` (the report's plan, :mod:`selectscale.report.plan`, passed only when some expected run is not
finished): the Markdown adds a "Runs" section with every expected run, its state (finished, running,
interrupted, missing, foreign) and why; the LaTeX lists the runs not counted. Without it nothing changes.

Issue 34: the "ordering as paper" column counts only the pairs Welch's test separates at alpha 0.05
(:func:`selectscale.report.stats.ordering_as_paper`), every block's minimum detectable difference (80% power,
two-sided alpha 0.05) stands in the comparisons and in a line under them, and a row whose rate drops fewer than
one map per drop layer on average is flagged ``near no-op`` (:func:`selectscale.report.selection.near_no_op_flag`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from . import stats
from .selection import near_no_op_flag
from .tables import (
    MEASURED_HEADER,
    Group,
    final_train_mean,
    format_mean_std,
    format_measured,
    format_measured_top5,
    format_schedule,
    mean_and_std,
    seed_count_flag,
)
from .titles import table_title

RUNS_HEADER = ["row", "seed", "state", "why", "run directory"]


class RunState(Protocol):
    """What the renderers read of a planned run (:class:`selectscale.report.plan.PlannedRun`)."""

    row: str
    seed: int
    run_dir: Path
    state: str
    reason: str


BEST_EPOCH_HEADER = "best-epoch top-1 (%) (optimistic: chosen on test data)"
TRAIN_HEADER = "final train top-1 (%) mean (n)"  # the last epoch's running error in training mode (metrics.jsonl)
RANGE_HEADER = "min-max over seeds (%)"
COMPARISON_HEADER = ["block", "SelectScale row", "vs no drop: diff (pp), Welch", "best other",
                     "vs best other: diff (pp), Welch", "min. detectable diff. (pp), 80% power",
                     "ordering as paper (pairs with Welch p < 0.05)"]


def paper_value(paper: dict | None, key: tuple) -> str:
    """The paper's number for a group key, looked up by the key tuple or, for one grouping key, its value."""
    candidates = (key, key[0]) if len(key) == 1 else (key,)
    for candidate in candidates:
        if paper and paper.get(candidate) is not None:
            return str(paper[candidate])
    return "—"


def _display(value: Any) -> str:
    return "—" if value is None else str(value)


def group_label(entry: Group) -> str:
    """How a row is named in comparisons: its table row label, else its method keys (``selectscale 0.2/0.1``)."""
    values = dict(zip(entry.by, entry.key, strict=True))
    if values.get("row") is not None:
        return str(values["row"])
    parts = [str(values[name]) for name in ("drop", "top_rate", "retain_rate") if values.get(name) is not None]
    return " ".join(parts) or "/".join(map(str, entry.key))


def _best_epoch(entry: Group) -> str:
    errors = [row.best_test_top1_error for row in entry.rows]
    if entry.mixed_settings or any(error is None for error in errors):
        return "n/a"
    mean, std = mean_and_std([100.0 * error for error in errors])
    return format_mean_std(mean, std, entry.n)


def _final_train(entry: Group) -> str:
    """Mean final-epoch training error (%) over the runs, ``n/a`` when a run has no metrics.jsonl."""
    mean = final_train_mean(entry)
    return "n/a" if mean is None else f"{mean:.2f} ({entry.n})"


def _range(entry: Group) -> str:
    errors = stats.group_errors(entry)
    return "n/a" if not errors else f"{min(errors):.2f}-{max(errors):.2f}"


def _p_columns(entry: Group, block: Sequence[Group]) -> list[str]:
    none = stats.no_drop_of(block)
    vs_none = "—" if entry is none or none is None else stats.format_p(stats.compare(entry, none))
    other = stats.best_other(block, exclude=entry)
    vs_other = "—" if other is None else f"{stats.format_p(stats.compare(entry, other))} ({group_label(other)})"
    return [vs_none, vs_other]


def table_cells(groups: Sequence[Group], paper: dict | None, expected_seeds: int | None,
                paper_top5: dict | None = None, extra_columns: bool = False,
                paper_header: str = "paper (%)") -> tuple[list[str], list[list[str]]]:
    """The header and the cells (plain text) of the table shared by both renderers.

    ``paper_top5`` (a dict like ``paper``, possibly empty) adds the measured and the paper's top-5 columns."""
    by = groups[0].by if groups else ()
    errors = [MEASURED_HEADER, paper_header]
    if paper_top5 is not None:
        errors = [MEASURED_HEADER, "paper top-1 (%)", MEASURED_HEADER.replace("top-1", "top-5"), "paper top-5 (%)"]
    errors.append(TRAIN_HEADER)
    extra = [BEST_EPOCH_HEADER, RANGE_HEADER] if extra_columns else []
    header = [*by, *errors, *extra, "p vs no drop", "p vs best other", "schedule (epochs)", "data", "hardware",
              "flags"]
    blocks = stats.blocks(groups)
    body = []
    for entry in groups:
        flags = list(entry.flags)
        seed_flag = seed_count_flag(entry.n, expected_seeds)
        if seed_flag is not None and seed_flag not in flags:
            flags.insert(0, seed_flag)
        if (no_op := near_no_op_flag(entry)) is not None:
            flags.append(no_op)
        errors = [format_measured(entry), paper_value(paper, entry.key)]
        if paper_top5 is not None:
            errors += [format_measured_top5(entry), paper_value(paper_top5, entry.key)]
        errors.append(_final_train(entry))
        extra = [_best_epoch(entry), _range(entry)] if extra_columns else []
        body.append([*map(_display, entry.key), *errors, *extra, *_p_columns(entry, blocks[stats.block_key(entry)]),
                     format_schedule(entry), entry.data, "; ".join(sorted(entry.hardware)), "; ".join(flags)])
    return header, body


def _difference(entry: Group, other: Group | None) -> str:
    if other is None or entry.top1_mean is None or other.top1_mean is None:
        return "n/a"
    result = stats.compare(entry, other)
    test = "p n/a (< 2 seeds a side)" if result is None else (
        f"t={result.t:.2f}, dof={result.dof:.1f}, {stats.format_p(result)}")
    return f"{entry.top1_mean - other.top1_mean:+.2f}, {test}"


def comparison_cells(groups: Sequence[Group], paper: dict | None) -> list[list[str]]:
    """One line per SelectScale row of each block: against no drop, against the best other method, and
    whether the block's rows are ordered as in the paper."""
    body = []
    for key, block in stats.blocks(groups).items():
        values = {entry.key: stats.paper_number(paper_value(paper, entry.key)) for entry in block}
        ordering = stats.ordering_as_paper(block, values, group_label)
        design = stats.block_power(block)
        mdd = "n/a (< 2 rows of >= 2 seeds)" if design is None else f"{design.mdd:.2f}"
        for entry in (entry for entry in block if stats.drop_name(entry) == stats.SELECTIVE):
            other = stats.best_other(block)
            body.append([block_label(key), group_label(entry),
                         _difference(entry, stats.no_drop_of(block)), "—" if other is None else group_label(other),
                         _difference(entry, other), mdd, ordering])
    return body


def block_label(key: tuple) -> str:
    """How a block is named: its key's values (``resnet8``), ``all`` for an empty key."""
    return ", ".join(map(str, key)) or "all"


def power_lines(groups: Sequence[Group]) -> list[str]:
    """One sentence on the minimum detectable difference of every block that has one (none: [])."""
    designs = [(block_label(key), design) for key, block in stats.blocks(groups).items()
               if (design := stats.block_power(block)) is not None]
    if not designs:
        return []
    values = "; ".join(f"{label}: {stats.format_power(design)}" for label, design in designs)
    return [f"Minimum detectable difference between two rows of a block (80% power, two-sided alpha 0.05): "
            f"{values}. Computed for the {stats.MDD_METHOD}; n is the block's smallest n a row. A true difference "
            "smaller than this is detected less than 80% of the time, so a p-value that is not significant does not "
            "show that two rows are equal."]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_markdown_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(map(_markdown_cell, cells)) + " |" for cells in body]


def render_markdown(groups: Sequence[Group], paper: dict | None = None, expected_seeds: int | None = None,
                    title: str = "Results", provenance_lines: Sequence[str] = (),
                    skipped: Sequence[tuple[Path, str]] = (), paper_top5: dict | None = None,
                    extra_columns: bool = False, paper_header: str = "paper (%)",
                    run_states: Sequence[RunState] = ()) -> str:
    """A Markdown section: title (plus the data kind and schedule when they are not the paper's:
    :func:`~selectscale.report.titles.table_title`), provenance lines, the table, the comparisons, every expected
    run's state (when ``run_states`` is given), and the left-out result files.

    ``paper`` maps a group key (or, for one grouping key, the bare value) to the paper's number as text."""
    header, body = table_cells(groups, paper, expected_seeds, paper_top5, extra_columns, paper_header)
    lines = [f"## {table_title(title, groups)}", ""]
    if provenance_lines:
        lines += [*(f"- {line}" for line in provenance_lines), ""]
    lines += _markdown_table(header, body)
    comparisons = comparison_cells(groups, paper)
    if comparisons:
        lines += ["", "Comparisons (Welch's unequal-variance t-test, two-sided, over per-seed last-epoch errors; "
                  "diff = SelectScale minus the other, percentage points; best other = lowest mean of the methods "
                  "that are neither no drop nor SelectScale):", ""]
        lines += _markdown_table(COMPARISON_HEADER, comparisons)
    lines += [line for text in power_lines(groups) for line in ("", text)]
    lines += _markdown_runs(run_states)
    if skipped:
        lines += ["", f"> **Warning:** {len(skipped)} result file(s) left out of this table:", ">"]
        lines += [f"> - Left out: {path}: {reason}" for path, reason in skipped]
    return "\n".join(lines) + "\n"


def _state_counts(run_states: Sequence[RunState]) -> str:
    counts: dict[str, int] = {}
    for run in run_states:
        counts[run.state] = counts.get(run.state, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in counts.items())


def _markdown_runs(run_states: Sequence[RunState]) -> list[str]:
    """The "Runs" section: every expected run, its state and why; [] without ``run_states``."""
    if not run_states:
        return []
    counted = sum(run.state == "finished" for run in run_states)
    body = [[run.row, str(run.seed), run.state, run.reason, str(run.run_dir)] for run in run_states]
    counts = _state_counts(run_states)
    return ["", "### Runs", "",
            f"> **Warning:** {counted} of {len(run_states)} expected runs are counted above ({counts}). Only "
            "finished runs of each row's own setting and seed count; running, interrupted and missing runs are not "
            "in the means yet, and a foreign run (another setting or seed in a row's folder) never is.", "",
            *_markdown_table(RUNS_HEADER, body)]


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "±": r"$\pm$", "—": "---", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell (``±`` becomes ``$\\pm$``)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _latex_tabular(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline",
             " & ".join(latex_escape(cell) for cell in header) + r" \\", r"\hline"]
    return lines + [" & ".join(latex_escape(cell) for cell in cells) + r" \\" for cells in body] + [
        r"\hline", r"\end{tabular}"]


def render_latex(groups: Sequence[Group], paper: dict | None = None, expected_seeds: int | None = None,
                 title: str = "Results", provenance_lines: Sequence[str] = (),
                 skipped: Sequence[tuple[Path, str]] = (), paper_top5: dict | None = None,
                 extra_columns: bool = False, paper_header: str = "paper (%)",
                 run_states: Sequence[RunState] = ()) -> str:
    """A LaTeX ``table`` (plain ``tabular`` with ``\\hline``, no extra packages) captioned with the Markdown's
    title, the comparisons, then the runs not counted (when ``run_states`` is given) and the left-out files."""
    header, body = table_cells(groups, paper, expected_seeds, paper_top5, extra_columns, paper_header)
    caption = latex_escape(table_title(title, groups))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", *_latex_tabular(header, body)]
    comparisons = comparison_cells(groups, paper)
    if comparisons:
        lines += [r"\par\smallskip{\footnotesize Comparisons: Welch's t-test, two-sided, per-seed errors}\par",
                  *_latex_tabular(COMPARISON_HEADER, comparisons)]
    lines += [rf"\par\smallskip{{\footnotesize {latex_escape(line)}}}" for line in power_lines(groups)]
    lines += [rf"\par\smallskip{{\footnotesize {latex_escape(line)}}}" for line in provenance_lines]
    lines.append(r"\end{table}")
    not_counted = [run for run in run_states if run.state != "finished"]
    if not_counted:
        lines += [rf"% Warning: {len(run_states) - len(not_counted)} of {len(run_states)} expected runs counted "
                  f"({_state_counts(run_states)})", r"\begin{itemize}"]
        lines += [rf"\item Not counted: {latex_escape(f'{run.row} seed {run.seed}: {run.state}: {run.reason}')}"
                  for run in not_counted]
        lines.append(r"\end{itemize}")
    if skipped:
        lines += [rf"% Warning: {len(skipped)} result file(s) left out of this table", r"\begin{itemize}"]
        lines += [rf"\item Left out: {latex_escape(str(path))}: {latex_escape(reason)}" for path, reason in skipped]
        lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"
