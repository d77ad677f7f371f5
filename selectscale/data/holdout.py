"""A class-balanced validation split held out of the training images, so that a rate can be chosen without
the test images (issue 22).

``class_balanced_holdout(labels, fraction, seed)`` picks, in every class, ``round(fraction * n_c)`` (half up) of
that class's images by a permutation drawn from its own generator (``seed``, not the run's seed: every run of
a selection grid sees the same split; the 5,438 mini CIFAR-10 images at 0.2 give 1,089, and at 0.2 no class
count lies on a half, so half-up and Python's round agree there). ``split_validation(train, fraction, seed)``
returns the two :class:`~selectscale.data.cifar.CifarSplit` s: the rest to train on, the held-out images to
evaluate on. The test split is not part of either.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .cifar import CifarSplit


def class_balanced_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held)``: sorted int64 indices into ``labels``; per class ``round(fraction * n_c)`` (half up)
    are held.

    ``fraction`` in [0, 1); a class keeps at least one training image."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} must be in [0, 1)")
    generator = torch.Generator().manual_seed(int(seed))
    held = []
    for label in torch.unique(labels).tolist():  # ascending: the draw does not depend on the file order
        members = torch.nonzero(labels == label).flatten()
        count = min(int(math.floor(fraction * members.numel() + 0.5)), members.numel() - 1)  # half up
        held.append(members[torch.randperm(members.numel(), generator=generator)[:count]])
    held_index = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[held_index] = False
    return torch.nonzero(mask).flatten(), held_index


def split_validation(train: CifarSplit, fraction: float, seed: int) -> tuple[CifarSplit, CifarSplit]:
    """``(rest, validation)`` of a training split: :func:`class_balanced_holdout` applied to its images."""
    kept, held = class_balanced_holdout(train.labels, fraction, seed)
    return (replace(train, images=train.images[kept], labels=train.labels[kept]),
            replace(train, images=train.images[held], labels=train.labels[held]))
