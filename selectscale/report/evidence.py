"""An evidence experiment's machine-readable summary and its test- and training-error curves
(``results/mini_cifar10/``).

``summary.json`` holds one object per method: n, mean and sample std of the last-epoch test error, the mean
final-epoch training error (from metrics.jsonl), and Welch's two-sided p against no drop and against the best
other method of its block (null where undefined). ``curves.png`` draws each method's test error (left) and
training error (right) over epochs: the mean over seeds as a line, the min-max over seeds as a band.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from . import stats
from .render import group_label
from .tables import Group, final_train_mean


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _p(result: stats.WelchResult | None) -> float | None:
    return None if result is None else result.p


def summary_rows(groups: Sequence[Group]) -> list[dict]:
    """One dict per group: the fields of issue 12's ``summary.json`` (errors in percent)."""
    blocks, rows = stats.blocks(groups), []
    for entry in groups:
        block = blocks[stats.block_key(entry)]
        none, other = stats.no_drop_of(block), stats.best_other(block, exclude=entry)
        train_mean = final_train_mean(entry)
        rows.append({
            "method": group_label(entry), "drop": stats.drop_name(entry), "n": entry.n,
            "seeds": list(entry.seeds),
            "test_top1_error_mean": _percent(entry.top1_mean), "test_top1_error_std": _percent(entry.top1_std),
            "train_top1_error_mean": _percent(train_mean),
            "p_vs_none": None if entry is none else _p(stats.compare(entry, none)),
            "best_other": None if other is None else group_label(other),
            "p_vs_best_other": _p(stats.compare(entry, other)),
            "flags": list(entry.flags),
        })
    return rows


def write_summary(groups: Sequence[Group], path: Path, provenance: dict) -> Path:
    """``path`` = {"provenance": ..., "units": ..., "rows": summary_rows(groups)} as JSON."""
    payload = {"provenance": provenance, "units": "percent (test and train top-1 error)",
               "rows": summary_rows(groups)}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def mean_curve(entry: Group, curve: str = "test_curve") -> list[tuple[int, float, float, float]]:
    """[(epoch, mean, min, max)] of the test error (%) (``curve="train_curve"``: the training error) over the
    seeds, at the epochs every seed recorded."""
    by_epoch: dict[int, list[float]] = {}
    for row in entry.rows:
        for epoch, error in getattr(row, curve):
            by_epoch.setdefault(epoch, []).append(100.0 * error)
    return [(epoch, sum(values) / len(values), min(values), max(values))
            for epoch, values in sorted(by_epoch.items()) if len(values) == entry.n]


def figure_caption(groups: Sequence[Group]) -> str:
    """What a figure was made from, for a caption line: models, data, epochs, seeds (issue 15)."""
    models = sorted({row.model for entry in groups for row in entry.rows})
    data = " + ".join(sorted({entry.data for entry in groups}))
    epochs = "/".join(sorted({str(epoch) for entry in groups for epoch in entry.epochs}, key=int))
    seeds = sorted({seed for entry in groups for seed in entry.seeds})
    return (f"model: {', '.join(models)}; data: {data}; {epochs} epochs; seeds {', '.join(map(str, seeds))} "
            f"(n per line in the legend)")


def plot_curves(groups: Sequence[Group], path: Path, title: str) -> Path:
    """Test error (left) and training error (right) over epochs, one line per group (mean over seeds) with its
    min-max band over seeds; the training error is the running error of each epoch in training mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = ((axes[0], "test_curve", "test"), (axes[1], "train_curve", "train (running, training mode)"))
    for axis, curve, label in panels:
        for entry in groups:
            points = mean_curve(entry, curve)
            if not points:
                continue
            epochs, means, lows, highs = zip(*points, strict=True)
            (line,) = axis.plot(epochs, means, label=f"{group_label(entry)} (n={entry.n})", linewidth=1.4)
            axis.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"{label} top-1 error (%)")
        axis.grid(alpha=0.3)
        _zoom_to_late_epochs(axis, groups, curve)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.text(0.01, 0.01, figure_caption(groups), fontsize=7, color="0.3")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _zoom_to_late_epochs(axis, groups: Sequence[Group], name: str = "test_curve") -> None:
    """Cut the y axis above the worst mean of the second half of training, where the methods differ."""
    late = []
    for curve in filter(None, (mean_curve(entry, name) for entry in groups)):
        late += [mean for epoch, mean, _, _ in curve if epoch > curve[-1][0] / 2]
    if late:
        axis.set_ylim(bottom=max(0.0, min(late) - 5.0), top=max(late) + 8.0)
