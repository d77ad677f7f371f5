"""Plots of sweep tables (Figure 4's panels): one panel per sweep from a table's report groups, with the
no-drop and best-other rows as horizontal lines. Called by ``experiments report`` for any spec with panels."""

from __future__ import annotations

from pathlib import Path

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
