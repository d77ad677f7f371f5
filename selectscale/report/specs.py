"""The experiment specs ``configs/paper/NAME.yaml`` (the paper's tables, Figure 4's sweeps, our evidence) as
:class:`Table` objects of :class:`Row` s: loaded and checked here, run by :mod:`selectscale.experiments`,
rendered by the report; a sweep's ``sweeps`` expand into one row per value."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from selectscale.errors import ExperimentError
from selectscale.paths import config_dir

EXPERIMENTS = config_dir() / "paper"
TABLES = ("table1", "table2", "table3", "table4")
FIGURES = ("fig4",)  # sweep figures: rows like a table, rendered as a table and a plot
# Our own experiments (not the paper's), rendered in a folder of their own; a selection grid (layout
# "selection") writes selection.md into its study's folder.
EVIDENCE = ("mini_cifar10", "mini_overfit", "mini_overfit_selection", "mini_overfit_subset",
            "mini_overfit_subset_selection", "mini_overfit_pool")
NAMES = TABLES + FIGURES + EVIDENCE


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    paper: str
    paper_epochs: int | None
    paper_top5: str | None = None
    reference: str | None = None  # a sweep figure's horizontal line (e.g. "no drop")
    points: tuple[tuple[str, float], ...] = ()  # a sweep figure's (panel, x) positions of this row


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    group_by: tuple[str, ...]
    rows: tuple[Row, ...]
    top5: bool = False
    panels: tuple[tuple[str, str], ...] = ()  # a sweep figure's (panel title, swept key)
    layout: str = "table"  # "evidence": a folder NAME/ with table.md/.tex, summary.json and curves.png;
    # "selection": STUDY/selection.md and selection.json (rates chosen on a validation split)
    paper_header: str = "paper (%)"
    # A study whose runs are results (issue 22): its run directories live in this folder, committed, one
    # folder per row directly in it (RUNS/<row>/seed<k>, not RUNS/NAME/<row>/seed<k>); the default --runs.
    runs_folder: str | None = None
    study: str | None = None  # a selection grid: the study folder it writes into (results/STUDY/)
    # A study whose seeds are blocks (issue 37): all rows of one seed on one machine kind, seeds on any kind
    # (scripts/study_source.py checks it; the paired analysis tests the kind).
    seed_blocks: bool = False

    def runs_root(self, runs: Path) -> Path:
        """The folder holding this table's row folders, for the ``--runs`` folder ``runs``."""
        return runs if self.runs_folder else runs / self.name

    def row_dir(self, runs: Path, label: str) -> Path:
        """Where the runs of row ``label`` live: ``runs_root(runs)/label/seed<k>``."""
        return self.runs_root(runs) / label


def _row(spec: dict, row: dict) -> Row:
    overrides = [*spec.get("common", [])]
    overrides += [f"{key}={row[key]}" for key in ("model", "drop") if key in row]
    if "epochs" in row:
        overrides.append(f"trainer.epochs={row['epochs']}")
    overrides += row.get("overrides", [])
    label = row.get("label") or "-".join(str(row[key]) for key in ("model", "drop") if key in row)
    return Row(label, tuple(overrides), row["paper"], row.get("epochs", spec.get("paper_epochs")),
               row.get("paper_top5"), row.get("reference"))


def _sweep_rows(spec: dict, sweep_points: int | None) -> list[Row]:
    """One row per swept value; a setting in several sweeps is one row (trained once) with several points."""
    rows: dict[str, Row] = {}
    for sweep in spec.get("sweeps", []):
        values = sweep["values"] if sweep_points is None else sweep["values"][:sweep_points]
        for value in values:
            overrides = [*sweep.get("overrides", []), f"{sweep['key']}={value}"]
            settings = dict(item.split("=", 1) for item in overrides)
            ordered = sorted(settings, key=lambda key: (key != "drop.top_rate", key))  # top rate first
            label = sweep["drop"] + "".join(f"-{key.split('.')[-1].removesuffix('_rate')}{settings[key]}"
                                            for key in ordered)
            point = (sweep["panel"], float(value))
            if label in rows:
                rows[label] = replace(rows[label], points=(*rows[label].points, point))
            else:
                row = _row(spec, {"label": label, "drop": sweep["drop"], "overrides": overrides,
                                  "paper": "figure only"})
                rows[label] = replace(row, points=(point,))
    return list(rows.values())


def load_table(name: str, sweep_points: int | None = None) -> Table:
    """The spec ``configs/paper/NAME.yaml``; ``sweep_points`` keeps the first values of each sweep."""
    path = EXPERIMENTS / f"{name}.yaml"
    if name not in NAMES or not path.is_file():
        raise ExperimentError(f"experiment {name!r} is not known: use one of {', '.join(NAMES)}")
    spec = OmegaConf.to_container(OmegaConf.load(path))
    rows = [_row(spec, row) for row in spec["rows"]] + _sweep_rows(spec, sweep_points)
    panels = tuple((sweep["panel"], sweep["key"]) for sweep in spec.get("sweeps", []))
    return Table(name, spec["title"], tuple(spec["group_by"]), tuple(rows), bool(spec.get("top5")), panels,
                 spec.get("layout", "table"), spec.get("paper_header", "paper (%)"), spec.get("runs_folder"),
                 spec.get("study"), bool(spec.get("seed_blocks", False)))


def select_rows(table: Table, labels: str | None) -> Table:
    """The table with only the rows named in ``labels`` (comma-separated), or all of them."""
    if labels is None:
        return table
    wanted = labels.split(",")
    unknown = [label for label in wanted if label not in {row.label for row in table.rows}]
    if unknown:
        raise ExperimentError(f"--rows {','.join(unknown)}: no such row in {table.name}; its rows are "
                              f"{', '.join(row.label for row in table.rows)}")
    return replace(table, rows=tuple(row for row in table.rows if row.label in wanted))
