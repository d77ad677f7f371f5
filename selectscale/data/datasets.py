"""One entry point for the engine: a data set by name, and its loaders for this rank.

>>> bundle = build_dataset("synthetic", num_train=512, num_test=128)
>>> train, test = build_loaders(bundle, batch_size=64, seed=0, device="cpu")
>>> images, labels = next(iter(train))
>>> tuple(images.shape), bundle.num_classes, bundle.verified
((64, 3, 32, 32), 10, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cifar import CIFAR_MEAN_STD, CifarSplit, load_cifar_splits
from .cifar_files import IMAGE_BYTES
from .holdout import split_validation
from .loader import DeviceLoader, channel_mean_std
from .memory import memory_guard
from .pool import evaluation_pool
from .synthetic import make_synthetic

__all__ = ["DATASETS", "DatasetBundle", "build_dataset", "build_eval_loader", "build_loaders"]

DATASETS = ("cifar10", "cifar100", "synthetic", "imagenet")


@dataclass
class DatasetBundle:
    """Both splits of a data set and what the engine and the results need to know about it.

    ``train``/``test`` are :class:`~selectscale.data.cifar.CifarSplit` (in memory) for CIFAR and synthetic,
    ``ImageFolder`` datasets for ImageNet. ``verified``: official files (CIFAR: every md5; ImageNet: the
    official image and class counts; synthetic: never). ``mean``/``std``: normalisation, [0, 1] units.
    ``evaluated_on``: ``"test"``, or ``"validation"`` when ``test`` holds images held out of the training files
    (``validation_fraction``), never the test images. ``pool``: the evaluation pool (``eval_pool=True``: the
    unused training images, :mod:`selectscale.data.pool`), else None."""

    name: str
    train: Any
    test: Any
    num_classes: int
    classes: tuple[str, ...]
    verified: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    evaluated_on: str = "test"
    pool: Any = None


def build_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    num_train: int = 50_000,
    num_test: int = 10_000,
    num_classes: int = 10,
    on_bad_image: str = "fail",
    color_jitter: float = 0.4,
    lighting: float = 0.1,
    validation_fraction: float = 0.0,
    split_seed: int = 0,
    train_per_class: int = 0,
    eval_pool: bool = False,
    selection_fraction: float = 0.0,
) -> DatasetBundle:
    """Load ``cifar10``, ``cifar100`` or ``imagenet`` from ``root``, or generate ``synthetic``.

    ``num_train``, ``num_test``, ``num_classes`` and ``seed`` only concern the synthetic set;
    ``download`` only CIFAR; ``on_bad_image``, ``color_jitter`` and ``lighting`` (the training colour
    augmentation, 0 disables either) only ImageNet. ``validation_fraction`` > 0 (CIFAR and synthetic): hold
    that class-balanced fraction of the training images out (drawn with ``split_seed``), train on the rest and
    put the held-out images in ``test``, with ``evaluated_on="validation"``. ``train_per_class`` > 0 (CIFAR and
    synthetic): train on that many images of each class only, drawn with ``split_seed`` and disjoint from the
    held-out images (the same images whatever ``validation_fraction``). ``eval_pool`` (with ``train_per_class``):
    also the evaluation pool, the training images neither trained on nor in the ``selection_fraction`` split that
    chose the rates (``bundle.pool``; :class:`~selectscale.data.pool.NoPool` when none is left)."""
    if name not in DATASETS:
        raise ValueError(f"data set {name!r} is not known: use one of {', '.join(DATASETS)}")
    if (validation_fraction or train_per_class) and name == "imagenet":
        raise ValueError("validation_fraction and train_per_class are for the in-memory data sets "
                         "(cifar10, cifar100, synthetic)")
    split = dict(fraction=validation_fraction, seed=split_seed, per_class=train_per_class)
    if name == "synthetic":
        count = num_train + num_test  # generated whole in host memory, then kept there
        with memory_guard("synthetic data set", count, count * (IMAGE_BYTES + 8), "cpu",
                          "use a smaller dataset.train_size and dataset.test_size, or free memory on this machine"):
            train, test = make_synthetic(num_train, num_test, num_classes=num_classes, seed=seed)
        pool = evaluation_pool(train, selection_fraction, split_seed, train_per_class) if eval_pool else None
        train, test, evaluated_on = _held_out(train, test, **split)
        mean, std = channel_mean_std(train.images)
        return _bundle(name, train, test, mean, std, evaluated_on, pool)
    if root is None:
        raise ValueError(f"data set {name!r} needs root= (the folder holding its files)")
    if name == "imagenet":
        from .imagenet import IMAGENET_MEAN, IMAGENET_STD, is_official_imagenet, load_imagenet_folders  # torchvision

        train_set, val_set = load_imagenet_folders(root, on_bad_image, color_jitter=color_jitter, lighting=lighting)
        verified = is_official_imagenet(train_set, val_set)
        classes = tuple(train_set.classes)
        return DatasetBundle(
            name, train_set, val_set, len(classes), classes, verified, IMAGENET_MEAN, IMAGENET_STD, image_size=224
        )
    train, test = load_cifar_splits(root, name, download=download)
    pool = evaluation_pool(train, selection_fraction, split_seed, train_per_class) if eval_pool else None
    train, test, evaluated_on = _held_out(train, test, **split)
    mean, std = CIFAR_MEAN_STD[name]  # the official training set's statistics, whichever split trains
    return _bundle(name, train, test, mean, std, evaluated_on, pool)


def _held_out(train: CifarSplit, test: CifarSplit, fraction: float, seed: int,
              per_class: int) -> tuple[CifarSplit, CifarSplit, str]:
    """(training images, evaluation split, its name): the test split, or a validation split held out of
    ``train``; the training images are all the others or a ``per_class`` subset of them."""
    if not fraction and not per_class:
        return train, test, "test"
    rest, validation = split_validation(train, fraction, seed, per_class)
    return (rest, validation, "validation") if fraction else (rest, test, "test")


def _bundle(name: str, train: CifarSplit, test: CifarSplit, mean, std, evaluated_on: str = "test",
            pool: CifarSplit | None = None) -> DatasetBundle:
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        num_classes=train.num_classes,
        classes=train.classes,
        verified=train.verified and test.verified,
        mean=tuple(mean),
        std=tuple(std),
        image_size=int(train.images.shape[-1]),
        evaluated_on=evaluated_on,
        pool=pool,
    )


def build_loaders(
    bundle: DatasetBundle,
    batch_size: int,
    *,
    seed: int,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    eval_batch_size: int | None = None,
    workers: int = 8,
    padding_mode: str = "zeros",
    auto_augment: str | None = None,
) -> tuple[DeviceLoader | Any, DeviceLoader | Any]:
    """(train, test) loaders of ``bundle`` for this rank; ``batch_size`` is per rank. Both yield
    (images, labels) on ``device`` and have ``set_epoch``, ``__len__`` and ``num_samples``.
    ``workers`` (decoding processes) only matters for ImageNet, ``padding_mode`` (of the training crops:
    zeros or reflect) and ``auto_augment`` (None, randaugment, trivialaugment) only for the in-memory sets."""
    if bundle.name == "imagenet":
        from .imagenet import build_imagenet_loaders

        loaders = build_imagenet_loaders(
            (bundle.train, bundle.test), batch_size, workers, rank, world_size, seed,
            device=device, dtype=dtype, channels_last=channels_last, eval_batch_size=eval_batch_size,
        )
        return loaders.train, loaders.val
    common = dict(
        seed=seed, mean=bundle.mean, std=bundle.std, device=device, dtype=dtype,
        channels_last=channels_last, rank=rank, world_size=world_size,
    )
    train = DeviceLoader(bundle.train.images, bundle.train.labels, batch_size, train=True, padding_mode=padding_mode,
                         auto_augment=auto_augment, **common)
    test = build_eval_loader(bundle, bundle.test, eval_batch_size or batch_size, seed=seed, device=device,
                             rank=rank, world_size=world_size, dtype=dtype, channels_last=channels_last)
    return train, test


def build_eval_loader(bundle: DatasetBundle, split: CifarSplit, batch_size: int, *, seed: int,
                      device: torch.device | str, rank: int = 0, world_size: int = 1,
                      dtype: torch.dtype = torch.float32, channels_last: bool = False) -> DeviceLoader:
    """An evaluation loader (every image once, this rank's contiguous shard) of a split of an in-memory ``bundle``
    (its test split, or the evaluation pool), normalised with the bundle's mean and std."""
    return DeviceLoader(split.images, split.labels, batch_size, train=False, seed=seed, mean=bundle.mean,
                        std=bundle.std, device=device, dtype=dtype, channels_last=channels_last, rank=rank,
                        world_size=world_size)
