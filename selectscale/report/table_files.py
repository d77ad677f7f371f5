"""A spec's table files from its finished runs: ``report_table`` renders ``results/NAME.md`` and ``.tex`` (an
evidence spec: ``results/NAME/`` with summary.json and curves.png; a sweep spec: also ``NAME.png``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .collect import collect
from .evidence import plot_curves, write_summary
from .render import render_latex, render_markdown
from .selection import write_selection
from .specs import ExperimentError, Table
from .tables import group


def _table_groups(table: Table, runs: Path, seeds: int) -> tuple[list, dict, dict, list]:
    """The report groups of every row with runs, the paper's values by group key, and the left-out files."""
    groups, paper, paper_top5, skipped = [], {}, {}, []
    for row in table.rows:
        row_dir = table.row_dir(runs, row.label)
        if not row_dir.is_dir():
            continue
        collection = collect([row_dir])
        skipped += collection.skipped
        for found in group(collection.rows, by=table.group_by, paper_epochs=row.paper_epochs, expected_seeds=seeds):
            # The row's label leads the key: two rows may coincide once shortened (Table 3's 200 and 600
            # epochs), and each must keep its own paper value.
            found.by, found.key = ("row", *found.by), (row.label, *found.key)
            groups.append(found)
            paper[found.key], paper_top5[found.key] = row.paper, row.paper_top5
    if not groups:
        left_out = f"; left out {len(skipped)} result.json: " + "; ".join(
            f"{path}: {reason}" for path, reason in skipped[:3]) if skipped else ""
        raise ExperimentError(f"no finished runs of {table.name} under {table.runs_root(runs)}: run `make "
                              f"{table.name}` first (or pass RUNS=<folder> where they are){left_out}")
    return groups, paper, paper_top5, skipped


def _origin_lines(groups: list) -> list[str]:
    """Which code versions and environments the runs came from (a study's runs should share one of each)."""
    rows = [row for entry in groups for row in entry.rows]
    lines = []
    for name, label in (("source", "Code versions (selectscale/ and configs/ without the specs)"),
                        ("environment", "Environments")):
        counts = Counter(getattr(row, name) or "not recorded" for row in rows)
        lines.append(f"{label}: " + "; ".join(f"{value} ({count} runs)" for value, count in sorted(counts.items())))
    return lines


def report_table(table: Table, runs: Path, out: Path, seeds: int, extra_columns: bool = False) -> list[Path]:
    """Render ``out/NAME.md`` and ``out/NAME.tex`` (an evidence layout: ``out/NAME/table.md`` and friends)
    from the runs under ``runs/NAME``; ``extra_columns`` adds best-epoch errors and min-max over seeds."""
    groups, paper, paper_top5, skipped = _table_groups(table, runs, seeds)
    command = f"python -m selectscale.experiments report {table.name} --runs {runs}"
    if table.layout == "selection":
        return write_selection(table, groups, out / (table.study or table.name), command, skipped)
    provenance = [f"Rendered by `{command}` from the result.json files; each run's command is train.py with the "
                  f"overrides in configs/paper/{table.name}.yaml (test error of the last epoch).",
                  *_origin_lines(groups)]
    evidence = table.layout == "evidence"
    folder = out / table.name if evidence else out
    folder.mkdir(parents=True, exist_ok=True)
    stem = "table" if evidence else table.name
    outputs = [folder / f"{stem}.md", folder / f"{stem}.tex"]
    for path, render in zip(outputs, (render_markdown, render_latex), strict=True):
        path.write_text(render(groups, paper=paper, expected_seeds=seeds, title=table.title,
                               provenance_lines=provenance, skipped=skipped,
                               paper_top5=paper_top5 if table.top5 else None, extra_columns=extra_columns,
                               paper_header=table.paper_header))
    if evidence:
        outputs.append(write_summary(groups, folder / "summary.json",
                                     {"title": table.title, "command": command, "spec": f"configs/paper/"
                                      f"{table.name}.yaml", "left_out": [f"{p}: {r}" for p, r in skipped]}))
        outputs.append(plot_curves(groups, folder / "curves.png", table.title))
    if table.panels:
        from selectscale.report.sweeps import plot_sweeps  # matplotlib only when a spec has panels

        outputs.append(plot_sweeps(table, groups, out / f"{table.name}.png"))
    return outputs
