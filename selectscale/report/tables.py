"""Group run rows by setting, take mean and sample std over seeds, and render Markdown or LaTeX tables.

A group is averaged only when every run in it has the same full setting (see
:attr:`~selectscale.report.collect.RunRow.setting`); otherwise it is flagged ``mixed settings`` with the
differing keys and its mean is ``None``. Everything that makes a number weaker than the paper's (fewer seeds,
shortened schedules, unofficial data, duplicate seeds, uncommitted code) becomes a short flag in the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from .collect import RunRow

_PER_RUN_FIELDS = ("path", "setting", "test_top1_error", "test_top5_error", "seed", "device", "best_test_top1_error",
                   "final_train_top1_error", "test_curve", "train_curve")
GROUPABLE_KEYS = tuple(f.name for f in fields(RunRow) if f.name not in _PER_RUN_FIELDS)
MEASURED_HEADER = "measured top-1 (%) mean ± std (n)"
_MISSING = object()


@dataclass
class Group:
    """Runs sharing the display key; mean/std (percent, sample std) are None when not computable."""

    by: tuple[str, ...]
    key: tuple
    rows: list[RunRow]
    seeds: tuple[int, ...]
    top1_mean: float | None
    top1_std: float | None
    top5_mean: float | None
    top5_std: float | None
    mixed_settings: bool
    differing_keys: tuple[str, ...]
    duplicate_seeds: tuple[int, ...]
    hardware: frozenset[str]
    epochs: tuple[int, ...]
    paper_epochs: int | None
    data: str
    flags: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of runs in the group."""
        return len(self.rows)


def data_label(row: RunRow) -> str:
    """``official`` (verified files), ``synthetic``, or ``mini (5,438 train images)`` for other unverified data."""
    if row.verified:
        return "official"
    if row.dataset == "synthetic":
        return "synthetic"
    return f"mini ({row.train_size:,} train images)"


def differing_setting_keys(rows: Sequence[RunRow]) -> tuple[str, ...]:
    """The setting keys whose value (or presence) is not the same in every row, sorted."""
    settings = [row.setting_dict() for row in rows]
    keys = set().union(*settings) if settings else set()
    return tuple(sorted(key for key in keys if len({repr(s.get(key, _MISSING)) for s in settings}) > 1))


def mean_and_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than two values, both for none."""
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def final_train_mean(group: Group) -> float | None:
    """Mean final-epoch training error (%) of the group's runs; None when a run has no metrics.jsonl."""
    values = [row.final_train_top1_error for row in group.rows]
    return None if any(value is None for value in values) else mean_and_std([100.0 * v for v in values])[0]


def seed_count_flag(n: int, expected_seeds: int | None) -> str | None:
    """``"3 of 5 seeds"`` when a group has fewer runs than expected, else None."""
    return f"{n} of {expected_seeds} seeds" if expected_seeds and n < expected_seeds else None


def _flags(group: Group, expected_seeds: int | None) -> list[str]:
    rows, flags = group.rows, []
    if (seed_flag := seed_count_flag(group.n, expected_seeds)) is not None:
        flags.append(seed_flag)
    if group.mixed_settings:
        flags.append(f"mixed settings: {', '.join(group.differing_keys)}")
    if group.duplicate_seeds:
        flags.append(f"duplicate seeds: {', '.join(map(str, group.duplicate_seeds))}")
    if any(not row.verified and row.dataset != "synthetic" for row in rows):
        flags.append("unverified data")
    if len({data_label(row) for row in rows}) > 1:
        flags.append("mixed data")
    if group.paper_epochs is not None and any(epochs != group.paper_epochs for epochs in group.epochs):
        done = "/".join(map(str, group.epochs))
        flags.append(f"shortened: {done} of {group.paper_epochs} epochs")
    capped = sorted({row.max_steps_per_epoch for row in rows if row.max_steps_per_epoch is not None})
    if capped:
        flags.append(f"capped at {'/'.join(map(str, capped))} steps per epoch")
    if any(row.code_dirty for row in rows):
        flags.append("uncommitted code")
    if any(row.evaluated_on != "test" for row in rows):
        flags.append("validation split, not the test set")
    for name, label in (("source", "code versions"), ("environment", "environments")):
        if len({getattr(row, name) for row in rows}) > 1:
            flags.append(f"mixed {label}")
    return flags


def _one_group(by: tuple[str, ...], key: tuple, rows: list[RunRow], paper_epochs: int | None,
               expected_seeds: int | None) -> Group:
    differing = differing_setting_keys(rows)
    seeds = tuple(sorted(row.seed for row in rows))
    duplicates = tuple(sorted({seed for seed in seeds if seeds.count(seed) > 1}))
    top1_mean = top1_std = top5_mean = top5_std = None
    if not differing:
        top1_mean, top1_std = mean_and_std([100.0 * row.test_top1_error for row in rows])
        if all(row.test_top5_error is not None for row in rows):
            top5_mean, top5_std = mean_and_std([100.0 * row.test_top5_error for row in rows])
    labels = sorted({data_label(row) for row in rows})
    group = Group(by=by, key=key, rows=rows, seeds=seeds, top1_mean=top1_mean, top1_std=top1_std,
                  top5_mean=top5_mean, top5_std=top5_std, mixed_settings=bool(differing), differing_keys=differing,
                  duplicate_seeds=duplicates, hardware=frozenset(row.device for row in rows),
                  epochs=tuple(sorted({row.epochs for row in rows})), paper_epochs=paper_epochs,
                  data=" + ".join(labels))
    group.flags = _flags(group, expected_seeds)
    return group


def _sort_key(key: tuple) -> tuple:
    return tuple((value is None, str(value)) for value in key)


def group(rows: Iterable[RunRow], by: tuple[str, ...], paper_epochs: int | None = None,
          expected_seeds: int | None = None) -> list[Group]:
    """Group rows by the display keys ``by`` (names from :data:`GROUPABLE_KEYS`, e.g. ``("model", "drop")``).

    ``paper_epochs``: the paper's schedule length, to flag shortened runs. ``expected_seeds``: flag groups
    with fewer runs (rendering adds the same flag). Groups come sorted by key."""
    unknown = [name for name in by if name not in GROUPABLE_KEYS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPABLE_KEYS)}")
    buckets: dict[tuple, list[RunRow]] = {}
    for row in rows:
        buckets.setdefault(tuple(getattr(row, name) for name in by), []).append(row)
    return [_one_group(tuple(by), key, buckets[key], paper_epochs, expected_seeds)
            for key in sorted(buckets, key=_sort_key)]


def format_mean_std(mean: float, std: float | None, n: int) -> str:
    """``5.22 ± 0.08 (5)``, or ``5.22 (1)`` without a std: every mean ± std (n) cell of the report."""
    return f"{mean:.2f} ({n})" if std is None else f"{mean:.2f} ± {std:.2f} ({n})"


def format_measured(group: Group) -> str:
    """``5.22 ± 0.08 (5)``, ``5.22 (1)``, or ``not computed (mixed settings)``."""
    if group.mixed_settings or group.top1_mean is None:
        return "not computed (mixed settings)" if group.mixed_settings else f"not computed ({group.n})"
    return format_mean_std(group.top1_mean, group.top1_std, group.n)


def format_measured_top5(group: Group) -> str:
    """Like :func:`format_measured`, for the top-5 error (``not recorded`` when a run has none)."""
    if group.mixed_settings:
        return "not computed (mixed settings)"
    if group.top5_mean is None:
        return f"not recorded ({group.n})"
    return format_mean_std(group.top5_mean, group.top5_std, group.n)


def format_schedule(group: Group) -> str:
    """The schedule names and length: ``step_cifar, full (200)``, ``cosine, shortened 15/200`` or ``15 epochs``."""
    names = "/".join(sorted({row.schedule for row in group.rows}))
    epochs = "/".join(map(str, group.epochs))
    if group.paper_epochs is None:
        return f"{names}, {epochs} epochs"
    if group.epochs == (group.paper_epochs,):
        return f"{names}, full ({group.paper_epochs})"
    return f"{names}, shortened {epochs}/{group.paper_epochs}"
