"""Figure 4 of the paper: SelectScale's test error against its top rate and its retaining rate.

The runs are a sweep experiment (``configs/paper/fig4.yaml``) trained and collected by
:mod:`selectscale.experiments` like a table: ``make fig4`` trains (or resumes) them, ``make fig4-report``
renders ``results/fig4.md`` (every point with mean ± std over seeds and the usual flags) and ``fig4.png``
(one panel per sweep, error bars = sample std over seeds, with the no-drop run and the best other method
as horizontal lines and bands). A point whose runs differ in settings is not averaged, so not plotted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selectscale.figures.errors import FigureError

AXIS_LABELS = {"drop.top_rate": "top rate", "drop.retain_rate": "retaining rate"}


def panel_points(table, groups) -> dict[str, list[tuple[float, float, float, int]]]:
    """{panel title: [(x, mean %, std %, runs)] sorted by x} from the groups of a sweep table."""
    rows = {row.label: row for row in table.rows}
    points: dict[str, list] = {panel: [] for panel, _ in table.panels}
    for group in groups:
        if group.top1_mean is None:
            continue
        for panel, x in rows[group.key[0]].points:
            points[panel].append((x, group.top1_mean, group.top1_std or 0.0, group.n))
    return {panel: sorted(found) for panel, found in points.items()}


def reference_lines(table, groups) -> list[tuple[str, float, float, int]]:
    """[(label, mean %, std %, runs)] of the rows drawn as horizontal lines (no drop, best other method)."""
    rows = {row.label: row for row in table.rows}
    return [(rows[g.key[0]].reference, g.top1_mean, g.top1_std or 0.0, g.n) for g in groups
            if rows[g.key[0]].reference and g.top1_mean is not None]


def plot_sweeps(table, groups, path: Path) -> Path:
    """Draw one panel per sweep of ``table`` from its report groups into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    points, references = panel_points(table, groups), reference_lines(table, groups)
    figure, axes = plt.subplots(1, len(table.panels), figsize=(5 * len(table.panels), 3.6), squeeze=False)
    for axis, (panel, key) in zip(axes[0], table.panels, strict=True):
        for index, (label, mean, std, runs) in enumerate(references):
            color = f"C{index + 1}"
            axis.axhline(mean, color=color, linestyle="--", label=f"{label}: {mean:.2f} (n={runs})")
            axis.axhspan(mean - std, mean + std, color=color, alpha=0.12)
        if points[panel]:
            xs, means, stds, _ = zip(*points[panel], strict=True)
            axis.errorbar(xs, means, yerr=stds, marker="o", capsize=2, color="C0", label="SelectScale")
        axis.set(title=panel, xlabel=AXIS_LABELS.get(key, key), ylabel="test error (%)")
        axis.legend(fontsize=7)
    data = " + ".join(sorted({group.data for group in groups}))
    epochs = "/".join(sorted({str(epoch) for group in groups for epoch in group.epochs}))
    seeds = max((group.n for group in groups), default=0)
    figure.suptitle(f"{table.title}\ndata: {data}; {epochs} epochs (paper: {groups[0].paper_epochs}); up to {seeds} "
                    "seeds a point; error bars: std over seeds", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the fig4 run directories live")
    parser.add_argument("--seeds", type=int, default=5, help="runs expected per point (fewer are flagged)")
    parser.add_argument("--out", type=Path, default=Path("results"))


def run(args: argparse.Namespace) -> list[Path]:
    from selectscale.experiments import ExperimentError, load_table, report_table

    try:
        return report_table(load_table("fig4"), args.runs, args.out, args.seeds)
    except ExperimentError as error:
        raise FigureError(str(error)) from error
