"""A spec's table files from its finished runs: ``report_table`` renders ``results/NAME.md`` and ``.tex`` (an
evidence spec: ``results/NAME/`` with summary.json and curves.png; a sweep spec: also ``NAME.png``).

Which runs count is :func:`selectscale.report.plan.plan_table`'s answer: the finished runs of each row's seeds
that match the row. When any expected run is not finished (running, interrupted, missing or foreign), the
Markdown gets a "Runs" section listing every expected run with its state and reason (the LaTeX and summary.json
list the ones not counted), and stderr gets one line per such run; a table whose runs are all finished renders
exactly as before. A result.json under a row's folder that is not one of its expected runs is left out and
listed. The files are rendered into a hidden staging folder and renamed into place at the end, with SIGINT,
SIGTERM and SIGHUP held back during the renames: an interrupted report writes all of its files or none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .collect import find_result_files
from .evidence import plot_curves, write_summary
from .paired_table import render_paired
from .plan import PlannedRun, plan_table, state_counts
from .render import render_latex, render_markdown
from .selection import write_selection
from .specs import ExperimentError, Table
from .tables import group
from .titles import table_title


def _left_out(table: Table, runs: Path, plan: Sequence[PlannedRun], seeds: int) -> list[tuple[Path, str]]:
    """Every result.json under a row's folder that is not one of the runs the table asked for."""
    expected = {run.run_dir for run in plan}
    left_out = []
    for row in table.rows:
        row_dir = table.row_dir(runs, row.label)
        if row_dir.is_dir() and not row_dir.is_symlink():
            left_out += [(path, f"not one of the {seeds} runs asked for (seed0..seed{seeds - 1} of row {row.label}); "
                                "not counted") for path in find_result_files([row_dir]) if path.parent not in expected]
    return left_out


def _table_groups(table: Table, runs: Path, seeds: int, plan: Sequence[PlannedRun]) -> tuple[list, dict, dict, list]:
    """The report groups of every row with finished runs, the paper's values by group key, and the left-out
    files."""
    groups, paper, paper_top5 = [], {}, {}
    skipped = _left_out(table, runs, plan, seeds)
    for row in table.rows:
        finished = sorted((run.result for run in plan if run.row == row.label and run.state == "finished"),
                          key=lambda result: str(result.path))
        for found in group(finished, by=table.group_by, paper_epochs=row.paper_epochs, expected_seeds=seeds):
            # The row's label leads the key: two rows may coincide once shortened (Table 3's 200 and 600
            # epochs), and each must keep its own paper value.
            found.by, found.key = ("row", *found.by), (row.label, *found.key)
            groups.append(found)
            paper[found.key], paper_top5[found.key] = row.paper, row.paper_top5
    if not groups:
        others = [run for run in plan if run.state != "missing"]
        counts = ", ".join(f"{count} {state}" for state, count in state_counts(others).items())
        not_counted = f"; not counted: {counts}, e.g. {others[0].line()}" if others else ""
        left_out = f"; left out {len(skipped)} result.json: " + "; ".join(
            f"{path}: {reason}" for path, reason in skipped[:3]) if skipped else ""
        raise ExperimentError(f"no finished runs of {table.name} under {table.runs_root(runs)}: run `make "
                              f"{table.name}` first (or pass RUNS=<folder> where they are){not_counted}{left_out}")
    return groups, paper, paper_top5, skipped


def refuse_mixed_precisions(name: str, rows: Sequence) -> None:
    """One table, one precision (issue 35): ExperimentError (one line) when the counted runs trained in more than one
    (``trainer.precision``; a run recorded before the key: what trainer.cpu_amp / trainer.amp meant). The same
    precision on another machine kind is allowed; the "Environments" line records the machines."""
    by_precision: dict[str, list] = {}
    for row in rows:
        by_precision.setdefault(str(row.setting_dict().get("trainer.precision")), []).append(row)
    if len(by_precision) > 1:
        found = "; ".join(f"{precision}: {len(runs)} run(s), e.g. {runs[0].path.parent}"
                          for precision, runs in sorted(by_precision.items()))
        raise ExperimentError(f"{name} mixes precisions ({found}): a table compares runs of one precision; train the "
                              "others again with trainer.precision=<the table's> (or move them away); nothing was "
                              "written")


def _origin_lines(groups: list) -> list[str]:
    """Which code versions and environments the runs came from (a study's runs should share one of each)."""
    rows = [row for entry in groups for row in entry.rows]
    lines = []
    for name, label in (("source", "Code versions (selectscale/ and configs/ without the specs)"),
                        ("environment", "Environments")):
        counts = Counter(getattr(row, name) or "not recorded" for row in rows)
        lines.append(f"{label}: " + "; ".join(f"{value} ({count} runs)" for value, count in sorted(counts.items())))
    return lines


def problem_lines(table: Table, plan: Sequence[PlannedRun], skipped: Sequence[tuple[Path, str]]) -> list[str]:
    """One line per run not counted and per result.json left out, after a line with the counts (none: [])."""
    others = [run for run in plan if run.state != "finished"]
    lines = [f"{table.name}/{run.line()}" for run in others]
    lines += [f"{table.name}: left out {path}: {reason}" for path, reason in skipped]
    if not lines:
        return []
    counts = ", ".join(f"{count} {state}" for state, count in state_counts(others).items())
    head = f"{table.name}: {len(plan) - len(others)} of {len(plan)} expected runs counted" + (
        f"; not counted: {counts}" if others else "") + (f"; {len(skipped)} result.json left out" if skipped else "")
    return [head, *lines]


def _new_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and the folders above it that are missing; return the ones created, outermost first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    created = []
    for candidate in reversed(missing):
        candidate.mkdir()
        created.append(candidate)
    return created


@contextlib.contextmanager
def _staged(out: Path):
    """``(stage, commit)``: render into ``stage``; ``commit([(staged, final), ...])`` renames them into place with
    the stop signals held back. On any error or interrupt before that, nothing of it stays (created folders too)."""
    created = _new_folders(out)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))

    def commit(moves: Iterable[tuple[Path, Path]]) -> None:
        moves = list(moves)
        for _, final in moves:
            created.extend(_new_folders(final.parent))
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            for staged, final in moves:
                os.replace(staged, final)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    try:
        yield stage, commit
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a folder the report made and nothing else uses
        raise
    shutil.rmtree(stage, ignore_errors=True)


def report_table(table: Table, runs: Path, out: Path, seeds: int, extra_columns: bool = False,
                 epochs: int | None = None, extra: Sequence[str] = (),
                 warn: Callable[[str], object] | None = None) -> list[Path]:
    """Render ``out/NAME.md`` and ``out/NAME.tex`` (an evidence layout: ``out/NAME/table.md`` and friends)
    from the runs under ``runs/NAME``; ``extra_columns`` adds best-epoch errors and min-max over seeds.
    ``epochs`` and ``extra`` say what the runs were trained with beyond their rows (:func:`plan_table`); ``warn``
    gets the one-line problems (default: stderr)."""
    plan = plan_table(table, runs, seeds, epochs=epochs, extra=extra)
    say = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        groups, paper, paper_top5, skipped = _table_groups(table, runs, seeds, plan)
    except ExperimentError:
        if any(run.state in ("interrupted", "running") for run in plan):  # started, none finished: every run's state
            for line in problem_lines(table, plan, ()):
                say(line)
        raise
    refuse_mixed_precisions(table.name, [row for entry in groups for row in entry.rows])
    complete = all(run.state == "finished" for run in plan)
    listed = () if complete else plan
    command = f"python -m selectscale.experiments report {table.name} --runs {runs}" + (
        f" --epochs {epochs}" if epochs else "")
    try:
        with _staged(out) as (stage, commit):
            outputs = _render(table, groups, paper, paper_top5, skipped, listed, stage, out, seeds, command,
                              extra_columns)
            commit(outputs)
    except OSError as error:
        raise ExperimentError(f"cannot write the report of {table.name} into {out} ({error.strerror or error}): "
                              "free space or choose another --out; nothing was written") from error
    for line in problem_lines(table, plan, skipped):
        say(line)
    return [final for _, final in outputs]


def _render(table: Table, groups: list, paper: dict, paper_top5: dict, skipped: list, listed: Sequence[PlannedRun],
            stage: Path, out: Path, seeds: int, command: str, extra_columns: bool) -> list[tuple[Path, Path]]:
    """Write every file of the report into ``stage``; return ``(staged, final)`` pairs."""
    not_counted = [(run.run_dir, f"{run.state}: {run.reason}") for run in listed if run.state != "finished"]
    if table.layout == "selection":
        name = table.study or table.name
        written = write_selection(table, groups, stage / name, command, [*skipped, *not_counted])
        return [(path, out / name / path.name) for path in written]
    provenance = [f"Rendered by `{command}` from the result.json files; each run's command is train.py with the "
                  f"overrides in configs/paper/{table.name}.yaml (test error of the last epoch).",
                  *_origin_lines(groups)]
    evidence = table.layout == "evidence"
    folder = out / table.name if evidence else out
    stem = "table" if evidence else table.name
    moves = [(stage / f"{stem}.md", folder / f"{stem}.md"), (stage / f"{stem}.tex", folder / f"{stem}.tex")]
    for (path, _), render in zip(moves, (render_markdown, render_latex), strict=True):
        path.write_text(render(groups, paper=paper, expected_seeds=seeds, title=table.title,
                               provenance_lines=provenance, skipped=skipped,
                               paper_top5=paper_top5 if table.top5 else None, extra_columns=extra_columns,
                               paper_header=table.paper_header, run_states=listed))
    if evidence:
        title = table_title(table.title, groups)
        meta = {"title": title, "command": command, "spec": f"configs/paper/{table.name}.yaml",
                "left_out": [f"{p}: {r}" for p, r in skipped]}
        if not_counted:
            meta["not_counted"] = [f"{p}: {r}" for p, r in not_counted]
        moves.append((write_summary(groups, stage / "summary.json", meta), folder / "summary.json"))
        (stage / "paired.md").write_text(render_paired(groups, title, provenance))
        moves.append((stage / "paired.md", folder / "paired.md"))
        moves.append((plot_curves(groups, stage / "curves.png", title), folder / "curves.png"))
    if table.panels:
        from selectscale.report.sweeps import plot_sweeps  # matplotlib only when a spec has panels

        moves.append((plot_sweeps(table, groups, stage / f"{table.name}.png"), out / f"{table.name}.png"))
    return moves
