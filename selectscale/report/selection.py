"""Choose each method's rate from a grid of runs on a validation split (issue 22), never from test images.

A selection spec (layout ``selection``, e.g. configs/paper/mini_overfit_selection.yaml) trains every rate of
its grid with ``dataset.validation_fraction`` > 0, so that its runs evaluate on images held out of the
training files. :func:`choose_rates` refuses any run that was evaluated on the test split, then picks per
method (drop name) the grid row with the lowest mean validation top-1 error over its seeds (a tie keeps the
row listed first in the spec). ``selection.md`` shows the grid, every run's validation error and the
choice; ``selection.json`` holds the choice for the study spec and its test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .specs import ExperimentError, Table
from .stats import drop_name
from .tables import Group, final_train_mean, format_mean_std

SELECTION_FILES = ("selection.md", "selection.json")


def _check_validation_only(groups: Sequence[Group]) -> None:
    tested = [str(row.path) for entry in groups for row in entry.rows if row.evaluated_on != "validation"]
    if tested:
        raise ExperimentError(f"{len(tested)} run(s) of the selection grid were evaluated on the test split, e.g. "
                              f"{tested[0]}: a rate is chosen on a validation split only (dataset."
                              "validation_fraction > 0); move them out of the grid's folder")
    mixed = [entry.key[0] for entry in groups if entry.mixed_settings or entry.top1_mean is None]
    if mixed:
        raise ExperimentError(f"grid rows {', '.join(mixed)} have runs of different settings; the choice needs "
                              "one setting per row")


def choose_rates(groups: Sequence[Group]) -> dict[str, Group]:
    """``{drop name: the group with the lowest mean validation error}``, groups in spec order (ties: first);
    a no-drop row is the reference, never a candidate."""
    _check_validation_only(groups)
    chosen: dict[str, Group] = {}
    for entry in groups:
        method = drop_name(entry)
        if method == "none":
            continue  # the reference row: no rate to choose
        if method not in chosen or entry.top1_mean < chosen[method].top1_mean:
            chosen[method] = entry
    return chosen


def _rates(entry: Group) -> str:
    row = entry.rows[0]
    parts = [f"top_rate {row.top_rate}"] if row.top_rate is not None else []
    parts += [f"retain_rate {row.retain_rate}"] if row.retain_rate is not None else []
    return ", ".join(parts) or "—"


def _seed_errors(entry: Group) -> str:
    return ", ".join(f"{100 * row.test_top1_error:.2f} (seed {row.seed})"
                     for row in sorted(entry.rows, key=lambda row: row.seed))


def _final_train(entry: Group) -> str:
    mean = final_train_mean(entry)
    return "—" if mean is None else f"{mean:.2f}"


def _chosen_cell(entry: Group, winners: set[int]) -> str:
    if drop_name(entry) == "none":
        return "reference"
    return "**yes**" if id(entry) in winners else ""


def render_selection(table: Table, groups: Sequence[Group], chosen: dict[str, Group], command: str,
                     skipped: Sequence[tuple[Path, str]]) -> str:
    """selection.md: provenance, one line per grid row (every seed's validation error) and the choice."""
    winners = {id(entry) for entry in chosen.values()}
    sizes = sorted({row.train_size for entry in groups for row in entry.rows})
    lines = [f"## {table.title}", "",
             f"- Rendered by `{command}` from the result.json files (each run: train.py with the overrides in "
             f"configs/paper/{table.name}.yaml).",
             "- Every run below was evaluated on its validation split (result.json `dataset.evaluated_on`), "
             "images held out of the training files; the test images were not loaded. The choice reads only "
             "these validation errors (selectscale/report/selection.py).",
             f"- Training images per run: {', '.join(f'{size:,}' for size in sizes)}; hardware: "
             f"{', '.join(sorted({row.device for entry in groups for row in entry.rows}))}.", "",
             "| grid row | drop | rates | validation top-1 (%) per seed | mean ± std (n) | final train error (%) "
             "| chosen |", "|---|---|---|---|---|---|---|"]
    for entry in groups:
        lines.append(f"| {entry.key[0]} | {drop_name(entry)} | {_rates(entry)} | {_seed_errors(entry)} | "
                     f"{format_mean_std(entry.top1_mean, entry.top1_std, entry.n)} | {_final_train(entry)} | "
                     f"{_chosen_cell(entry, winners)} |")
    lines += ["", "Choice (lowest mean validation error per method):", ""]
    lines += [f"- {method}: `{entry.key[0]}` ({_rates(entry)}), "
              f"{format_mean_std(entry.top1_mean, entry.top1_std, entry.n)}" for method, entry in chosen.items()]
    if skipped:
        lines += ["", "Left out: " + "; ".join(f"{path}: {reason}" for path, reason in skipped)]
    return "\n".join(lines) + "\n"


def selection_payload(table: Table, chosen: dict[str, Group], command: str) -> dict:
    """selection.json: per method the chosen row, its rates and mean validation error (percent)."""
    return {"spec": f"configs/paper/{table.name}.yaml", "command": command, "units": "percent (validation top-1)",
            "chosen": {method: {"row": entry.key[0], "top_rate": entry.rows[0].top_rate,
                                "retain_rate": entry.rows[0].retain_rate, "n": entry.n,
                                "validation_top1_error_mean": round(entry.top1_mean, 4)}
                       for method, entry in chosen.items()}}


def write_selection(table: Table, groups: Sequence[Group], folder: Path, command: str,
                    skipped: Sequence[tuple[Path, str]]) -> list[Path]:
    """Write ``folder``/selection.md and selection.json; return their paths."""
    chosen = choose_rates(groups)
    folder.mkdir(parents=True, exist_ok=True)
    markdown, payload = (folder / name for name in SELECTION_FILES)
    markdown.write_text(render_selection(table, groups, chosen, command, skipped))
    payload.write_text(json.dumps(selection_payload(table, chosen, command), indent=2) + "\n")
    return [markdown, payload]
