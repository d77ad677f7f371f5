"""Finished runs as the figure commands show them: the data they saw and what their records say (the run itself,
config and weights, comes from :func:`selectscale.runs.load_run`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from selectscale.data import BadImageError, CifarSplit, DatasetBundle, build_dataset, imagenet_val_transform
from selectscale.errors import FigureError, RunDirError
from selectscale.runs.result import read_result


@dataclass
class Split:
    """One split of a data set as the network sees it in evaluation: no augmentation."""

    name: str  # training, test or validation
    source: object  # a CifarSplit (uint8 in memory) or an ImageFolder with the evaluation transform
    labels: Tensor
    classes: tuple[str, ...]
    mean: Tensor  # 1 x 3 x 1 x 1, [0, 1] units
    std: Tensor

    def load(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """Normalised float images B x 3 x H x W and their labels."""
        if isinstance(self.source, CifarSplit):
            return (self.source.images[indices].float() / 255 - self.mean) / self.std, self.labels[indices]
        try:
            images = [self.source[index][0] for index in indices]
        except BadImageError as error:
            raise FigureError(f"{error}; replace the file or choose other images (--images, --spread-images)") from None
        return torch.stack(images), self.labels[indices]

    def display(self, images: Tensor) -> Tensor:
        """B x H x W x 3 in [0, 1], for imshow."""
        return (images.cpu() * self.std + self.mean).clamp(0, 1).permute(0, 2, 3, 1)


def open_split(cfg: DictConfig, data_root: str | None, training: bool) -> tuple[Split, DatasetBundle]:
    """(split, bundle) of a run's data set: the training or the evaluation split, without augmentation."""
    data = cfg.dataset
    try:
        bundle = build_dataset(data.name, data_root or data.root, num_train=data.train_size,
                               num_test=data.test_size, num_classes=data.num_classes)
    except (OSError, ValueError) as error:
        raise FigureError(f"data set {data.name} did not load ({' '.join(str(error).split())}); "
                          "pass its folder with --data") from None
    source = bundle.train if training else bundle.test
    if bundle.name == "imagenet":
        labels = torch.as_tensor(source.targets)
        if training:  # Figure 1 shows training images, but centre-cropped, not randomly augmented
            source = copy.copy(source)
            source.transform = imagenet_val_transform(bundle.image_size)
    else:
        labels = source.labels
    name = "training" if training else ("validation" if bundle.name == "imagenet" else "test")
    stats = [torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1) for value in (bundle.mean, bundle.std)]
    return Split(name, source, labels, tuple(bundle.classes), *stats), bundle


def training_record(run_dir: Path, cfg: DictConfig) -> tuple[str, str]:
    """(epochs trained, data trained on) as the run's result.json records them."""
    try:
        result = read_result(run_dir)
    except (OSError, ValueError, RunDirError):
        result = None
    if not result:
        return f"unknown (no readable result.json; configured {cfg.trainer.epochs})", f"{cfg.dataset.name}"
    data = result.get("dataset", {})
    complete = "" if result.get("complete") else ", incomplete"
    return (f"{result.get('epochs_completed')} of {cfg.trainer.epochs}{complete}",
            f"{data.get('name')}, verified {data.get('verified')}, {data.get('train_size')}/{data.get('test_size')}")


def data_identity(cfg: DictConfig) -> tuple:
    """What makes two runs' images the same: the name, and for synthetic data the sizes it is generated with."""
    data = cfg.dataset
    return (data.name,) + ((data.train_size, data.test_size, data.num_classes) if data.name == "synthetic" else ())
