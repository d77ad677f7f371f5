"""The evaluation pool (issue 37): every training image a run neither trained on nor chose its rates on.

A run on a class-balanced training subset (``dataset.train_per_class``) leaves most of the training files
unused. Part of them, the validation split a selection grid held out (``dataset.selection_fraction``, drawn with
``split_seed``: :func:`~selectscale.data.holdout.class_balanced_holdout`), chose the run's rates; the rest took
no part in anything. :func:`unused_indices` returns that rest, class-balanced: the same number from every class,
the largest the smallest class allows. Scored together with the test images, they shrink the test-set sampling
noise that dominates a mini study's seed-to-seed spread (issue 37: ~1.0 of 1.1 points on 1,017 test images).
Nothing is ever chosen on the pool; reports show it beside the test-only error.

Each class's images are ordered by the same permutation the holdout draws (``split_seed``): the validation
images are its first ``round(fraction * n_c)`` (half up), the trained subset its last ``train_per_class``; the
pool takes the first ``m`` of what lies between, ``m`` = the smallest such middle over the classes. On the mini
CIFAR-10 files (5,438 images), ``train_per_class=68`` and ``selection_fraction=0.2`` give 350 a class: 3,500.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .cifar import CifarSplit
from .holdout import class_permutations, held_count


class NoPool(ValueError):
    """No image is left for the pool (a setting: the engine reports it as a configuration error)."""


def unused_indices(labels: torch.Tensor, selection_fraction: float, seed: int, per_class: int) -> torch.Tensor:
    """Sorted int64 indices into ``labels``: per class, the first ``m`` images of the class's permutation after
    its validation images and before its trained subset, ``m`` the same for every class (the largest possible).

    ``per_class`` must be > 0 (with every training image trained on, none is unused)."""
    if per_class <= 0:
        raise NoPool("the evaluation pool needs a training subset (dataset.train_per_class > 0): a run on every "
                     "training image leaves none unused")
    if not 0.0 <= selection_fraction < 1.0:
        raise NoPool(f"selection fraction {selection_fraction} must be in [0, 1)")
    middles = []
    for order in class_permutations(labels, seed):
        held = held_count(selection_fraction, order.numel())  # the images the holdout held out
        middles.append(order[held:max(held, order.numel() - per_class)])
    size = min(middle.numel() for middle in middles)
    if size == 0:
        raise NoPool(f"a class has no training image left after its {per_class} trained (dataset.train_per_class) "
                     f"and its validation share {selection_fraction} (dataset.selection_fraction): no pool")
    return torch.sort(torch.cat([middle[:size] for middle in middles])).values


def evaluation_pool(train: CifarSplit, selection_fraction: float, seed: int, per_class: int) -> CifarSplit:
    """The unused training images of ``train`` (the whole training split, before any holdout) as a split."""
    chosen = unused_indices(train.labels, selection_fraction, seed, per_class)
    return replace(train, images=train.images[chosen], labels=train.labels[chosen])
