"""Data: CIFAR-10/100 from the official files, a synthetic CIFAR-shaped set, ImageNet folders, and loaders.

>>> from selectscale.data import CIFAR_MEAN_STD, DeviceLoader, load_cifar
>>> train = load_cifar("~/data", "cifar10", train=True)           # doctest: +SKIP
>>> mean, std = CIFAR_MEAN_STD["cifar10"]
>>> loader = DeviceLoader(train.images, train.labels, 128, train=True, seed=0,
...                       mean=mean, std=std, device="cuda")      # doctest: +SKIP

``build_dataset(name, root)`` and ``build_loaders(bundle, batch_size, seed=..., device=...)`` do the same for
every data set by name. See docs/data.md.
"""

import importlib

from .cifar import (
    CIFAR_MEAN_STD,
    CifarFormatError,
    CifarSplit,
    check_same_classes,
    download_cifar,
    load_cifar,
    load_cifar_splits,
)
from .datasets import DATASETS, DatasetBundle, build_dataset, build_eval_loader, build_loaders
from .download import DownloadError
from .loader import DeviceLoader, channel_mean_std, crop_and_flip, derive_seed
from .sharding import ContiguousShardSampler, eval_shard_bounds, train_shard
from .synthetic import make_synthetic
from .unreadable import BadImageError

# Imported on first use (PEP 562): these need torchvision, whose import (it loads torch._dynamo) takes about 4 s
# on a 2-core CPU, which a run on CIFAR-shaped or synthetic data and a rejected command line should not pay.
_TORCHVISION_NAMES = {
    "CIFAR_SPECS": ".cifar",
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderWithPolicy", "Lighting", "build_imagenet_loaders",
                     "imagenet_train_transform", "imagenet_val_transform", "load_imagenet_folders"), ".imagenet"),
}


def __getattr__(name: str):
    if name not in _TORCHVISION_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_TORCHVISION_NAMES[name], __name__), name)
    globals()[name] = value  # once: later look-ups find it without coming here
    return value

__all__ = [
    "CIFAR_MEAN_STD",
    "CIFAR_SPECS",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BadImageError",
    "CifarFormatError",
    "CifarSplit",
    "ContiguousShardSampler",
    "DatasetBundle",
    "DeviceLoader",
    "DownloadError",
    "ImageFolderWithPolicy",
    "Lighting",
    "build_dataset",
    "build_eval_loader",
    "build_imagenet_loaders",
    "build_loaders",
    "channel_mean_std",
    "check_same_classes",
    "crop_and_flip",
    "derive_seed",
    "download_cifar",
    "eval_shard_bounds",
    "imagenet_train_transform",
    "imagenet_val_transform",
    "load_cifar",
    "load_cifar_splits",
    "load_imagenet_folders",
    "make_synthetic",
    "train_shard",
]
