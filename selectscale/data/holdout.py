"""A class-balanced validation split held out of the training images, so that a rate can be chosen without
the test images (issue 22).

``class_balanced_holdout(labels, fraction, seed)`` picks, in every class, ``round(fraction * n_c)`` (half up) of
that class's images by a permutation drawn from its own generator (``seed``, not the run's seed: every run of
a selection grid sees the same split; the 5,438 mini CIFAR-10 images at 0.2 give 1,089, and at 0.2 no class
count lies on a half, so half-up and Python's round agree there). ``split_validation(train, fraction, seed)``
returns the two :class:`~selectscale.data.cifar.CifarSplit` s: the rest to train on, the held-out images to
evaluate on. The test split is not part of either. ``per_class`` > 0 (``dataset.train_per_class``) trains on
that many images of each class only, drawn from the same permutations (a class-balanced training subset: a
cheaper setting that overfits, issue 22).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .cifar import CifarSplit


class SubsetTooLarge(ValueError):
    """``train_per_class`` plus the held-out images exceed a class's images (a setting, not a bug: the engine
    reports it as a configuration error)."""


def class_balanced_holdout(labels: torch.Tensor, fraction: float, seed: int,
                           per_class: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held)``: sorted int64 indices into ``labels``; per class ``round(fraction * n_c)`` (half up)
    are held, and ``kept`` is the rest or, with ``per_class`` > 0, the last ``per_class`` of the class's draw.

    ``fraction`` in [0, 1); a class keeps at least one training image. The held images are the first of each
    class's permutation and a ``per_class`` subset its last ones, so the subset is the same images whatever the
    fraction (a rate grid with a held-out split trains on what the final runs train on) and never overlaps it."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} must be in [0, 1)")
    kept, held = [], []
    for label, order in zip(torch.unique(labels).tolist(), class_permutations(labels, seed), strict=True):
        size = order.numel()
        count = held_count(fraction, size)
        if per_class and count + per_class > size:
            raise SubsetTooLarge(f"class {label} has {size} training images, too few to train on {per_class} "
                                 f"(dataset.train_per_class) and hold out {count}: lower dataset.train_per_class")
        held.append(order[:count])
        kept.append(order[size - per_class:] if per_class else order[count:])
    return _sorted(kept), _sorted(held)


def held_count(fraction: float, size: int) -> int:
    """The validation images of a class of ``size``: round(fraction * size), half up, leaving at least one."""
    return min(int(math.floor(fraction * size + 0.5)), size - 1)


def class_permutations(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Per class (ascending labels: the draw does not depend on the file order), the class's indices into
    ``labels`` in the order one generator seeded with ``seed`` draws them: the holdout, the training subset and
    the evaluation pool (:mod:`selectscale.data.pool`) are all cut from these orders."""
    generator = torch.Generator().manual_seed(int(seed))
    orders = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        orders.append(members[torch.randperm(members.numel(), generator=generator)])
    return orders


def _sorted(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.long)


def split_validation(train: CifarSplit, fraction: float, seed: int,
                     per_class: int = 0) -> tuple[CifarSplit, CifarSplit]:
    """``(rest, validation)`` of a training split: :func:`class_balanced_holdout` applied to its images."""
    kept, held = class_balanced_holdout(train.labels, fraction, seed, per_class)
    return (replace(train, images=train.images[kept], labels=train.labels[kept]),
            replace(train, images=train.images[held], labels=train.labels[held]))
