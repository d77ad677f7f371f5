"""A rendered table's title says what its numbers are (issue 36): the spec's title, then, when the counted runs are
not the paper's, the data they were trained on and the schedule they ran, as their result.json files record it
(``dataset.verified``, ``dataset.name``, train and test sizes, ``evaluated_on``; ``trainer.epochs`` against the
row's paper epochs, ``trainer.max_steps_per_epoch``), the same facts the "data" and "flags" columns show::

    Table 1: CIFAR-10 test error (%) — synthetic data, shortened: 1 of 200 epochs, capped at 2 steps per epoch
    Mini ... ResNet-8 test error (%), 200 epochs — mini CIFAR-10 images (680 train / 1,017 test)

Official (md5-verified) data evaluated on the test split over the paper's full schedule keeps the plain title.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .collect import RunRow
from .tables import Group

SEPARATOR = " — "
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


def _sizes(values: Iterable[int | None]) -> str:
    return "/".join(f"{value:,}" for value in sorted(set(values)))


def _unofficial_images(dataset: str, rows: Sequence[RunRow]) -> str:
    """``mini CIFAR-10 images (5,438 train / 1,017 test)``: the train and evaluated images the rows counted."""
    sizes = f"{_sizes(row.train_size for row in rows)} train"
    if all(row.test_size is not None for row in rows):
        split = "/".join(sorted({row.evaluated_on for row in rows}))
        sizes += f" / {_sizes(row.test_size for row in rows)} {split}"
    return f"mini {DATASET_NAMES.get(dataset, dataset)} images ({sizes})"


def data_phrase(rows: Sequence[RunRow]) -> str | None:
    """What the rows were trained on when it is not only official data (the "data" column's kinds), else None."""
    official = [row for row in rows if row.verified]
    synthetic = any(not row.verified and row.dataset == "synthetic" for row in rows)
    mini: dict[str, list[RunRow]] = {}
    for row in rows:
        if not row.verified and row.dataset != "synthetic":
            mini.setdefault(row.dataset, []).append(row)
    if len(official) == len(rows):
        return None
    parts = ["official data"] if official else []
    parts += ["synthetic data"] if synthetic else []
    parts += [_unofficial_images(dataset, found) for dataset, found in sorted(mini.items())]
    return " + ".join(parts)


def _epochs_phrases(groups: Sequence[Group]) -> list[str]:
    """``shortened: 1 of 200 epochs`` (each distinct run and paper length once; ``300 epochs (paper: 200)`` for a
    longer one); [] when every group ran its paper epochs or has none to compare with."""
    shorter: list[str] = []
    other: list[str] = []
    for entry in groups:
        if entry.paper_epochs is None or all(epochs == entry.paper_epochs for epochs in entry.epochs):
            continue
        done = "/".join(map(str, entry.epochs))
        if max(entry.epochs) < entry.paper_epochs:
            phrase, found = f"{done} of {entry.paper_epochs} epochs", shorter
        else:
            phrase, found = f"{done} epochs (paper: {entry.paper_epochs})", other
        if phrase not in found:
            found.append(phrase)
    return ([f"shortened: {' and '.join(shorter)}"] if shorter else []) + other


def schedule_phrase(groups: Sequence[Group]) -> str | None:
    """The schedule when it is not the paper's: run length against the paper's, a step cap per epoch; else None."""
    rows = [row for entry in groups for row in entry.rows]
    parts = _epochs_phrases(groups)
    capped = sorted({row.max_steps_per_epoch for row in rows if row.max_steps_per_epoch is not None})
    if capped:
        parts.append(f"capped at {'/'.join(map(str, capped))} steps per epoch")
    return ", ".join(parts) or None


def table_title(title: str, groups: Sequence[Group]) -> str:
    """``title``, then `` — `` and the data kind and schedule of the counted runs when they are not the paper's."""
    rows = [row for entry in groups for row in entry.rows]
    parts = [phrase for phrase in (data_phrase(rows), schedule_phrase(groups)) if phrase]
    if rows and all(row.verified for row in rows) and any(row.evaluated_on != "test" for row in rows):
        parts.insert(0, "validation split, not the test set")
    return title + SEPARATOR + ", ".join(parts) if parts else title
