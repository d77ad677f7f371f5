"""An evidence experiment's machine-readable summary and its test- and training-error curves
(``results/mini_cifar10/``).

``summary.json`` holds one object per method: n, mean and sample std of the last-epoch test error, the mean
final-epoch training error (from metrics.jsonl), and Welch's two-sided p against no drop and against the best
other method of its block (null where undefined), what the row's drop setting does per drop layer of its network
(``maps_per_drop_layer``: the verb, the mean, the count per channel count, ``near_no_op``), and, per block, the
minimum detectable difference between two rows (``minimum_detectable_difference``: 80% power, two-sided alpha
0.05, n a row and the pooled SD; :mod:`selectscale.report.stats`). ``curves.png`` draws each method's test
error (left) and training error (right) over epochs: the mean over seeds as a line, the min-max over seeds as a band.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from . import stats
from .paired_table import summary_entry
from .render import block_label, group_label
from .selection import drop_load, near_no_op_flag
from .tables import Group, final_train_mean, mean_and_std


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
            "maps_per_drop_layer": _load(entry),
            "flags": [*entry.flags, *filter(None, [near_no_op_flag(entry)])],
            **_pool_summary(entry),
        })
    return rows


def _pool_summary(entry: Group) -> dict:
    """The row's evaluation-pool error (mean, std in percent, pool images) when every run has one; else nothing."""
    errors = [row.pool_top1_error for row in entry.rows]
    if not errors or any(error is None for error in errors) or len({row.pool for row in entry.rows}) > 1:
        return {}
    mean, std = mean_and_std([100.0 * error for error in errors])
    unused, tested = entry.rows[0].pool[2:]
    return {"pool_top1_error_mean": _percent(mean), "pool_top1_error_std": _percent(std),
            "pool_images": None if unused is None or tested is None else unused + tested}


def _load(entry: Group) -> dict | None:
    """What the row's drop setting does per drop layer at full strength (selection.drop_load); None without."""
    load = None if entry.mixed_settings or not entry.rows else drop_load(entry.rows[0])
    if load is None:
        return None
    return {"verb": load.verb, "mean": round(load.mean, 4), "layers": len(load.layers),
            "by_channels": {str(channels): round(maps, 4) for channels, maps in load.by_channels().items()},
            "near_no_op": load.near_no_op}


def power_rows(groups: Sequence[Group]) -> list[dict]:
    """Per block with >= 2 rows of >= 2 runs: its minimum detectable difference (pp) and what it rests on."""
    rows = []
    for key, block in stats.blocks(groups).items():
        design = stats.block_power(block)
        if design is not None:
            rows.append({"block": block_label(key), "n_per_row": design.n, "rows_pooled": design.rows,
                         "pooled_sd": round(design.pooled_sd, 4), "mdd": round(design.mdd, 4),
                         "alpha": design.alpha, "power": design.power, "method": stats.MDD_METHOD})
    return rows


def write_summary(groups: Sequence[Group], path: Path, provenance: dict) -> Path:
    """``path`` = {"provenance": ..., "units": ..., "rows": summary_rows(groups)} as JSON."""
    payload = {"provenance": provenance, "units": "percent (test and train top-1 error)",
               "rows": summary_rows(groups), "minimum_detectable_difference": power_rows(groups),
               "paired": summary_entry(groups)}
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


def summary_power(paths: Sequence[Path]) -> dict:
    """The minimum detectable difference (pp) of the rows of one or more ``summary.json`` files taken as one block:
    n = their smallest n, SD pooled over every row with >= 2 runs (for a summary whose runs are not committed)."""
    rows = [row for path in paths for row in json.loads(Path(path).read_text())["rows"]
            if row.get("n", 0) >= 2 and row.get("test_top1_error_std") is not None]
    if len(rows) < 2:
        raise ValueError(f"{', '.join(map(str, paths))}: fewer than 2 rows with >= 2 runs")
    sd = stats.pooled_sd([(row["test_top1_error_std"], row["n"]) for row in rows])
    n = min(row["n"] for row in rows)
    return {"files": [str(path) for path in paths], "n_per_row": n, "rows_pooled": len(rows),
            "pooled_sd": round(sd, 4), "mdd": round(stats.minimum_detectable_difference(sd, n), 4),
            "alpha": stats.ALPHA, "power": stats.POWER, "method": stats.MDD_METHOD}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m selectscale.report.evidence mdd SUMMARY.json [SUMMARY.json ...]``: the minimum detectable
    difference of the files' rows pooled as one block, as JSON (the rendered tables compute it per block)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m selectscale.report.evidence", description=main.__doc__)
    parser.add_argument("command", choices=["mdd"])
    parser.add_argument("summaries", nargs="+", type=Path)
    arguments = parser.parse_args(argv)
    print(json.dumps(summary_power(arguments.summaries), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
