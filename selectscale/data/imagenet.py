"""ILSVRC2012 (ImageNet-1k) from class folders, with the standard ResNet training augmentation.

Layout (torchvision's ``ImageFolder``): ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the
validation images sorted into class folders, e.g. with the usual ``valprep.sh``).

Training: RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3), horizontal flip, colour jitter 0.4/0.4/0.4
(brightness, contrast, saturation), AlexNet-style PCA lighting noise (std 0.1), normalisation; as in
fb.resnet.torch, which the paper's "standard colour augmentation" and "scale and aspect ratio augmentation"
refer to (``dataset.color_jitter`` and ``dataset.lighting`` change or, at 0, remove the colour steps).
Validation: resize 256, centre crop 224, normalisation. Decoding and augmentation run in DataLoader workers
(pinned memory, persistent workers); the training shard comes from a resumable
``DistributedSampler`` (drop_last), the validation shard from
:class:`~selectscale.data.sharding.ContiguousShardSampler` (no padding).

Unreadable images: ``on_bad_image="fail"`` raises :class:`BadImageError` naming the file; ``"skip"`` leaves
the image out of its batch, counts it (``ImageNetLoader.num_skipped``) and warns naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, default_collate
from torchvision import datasets
from torchvision import transforms as T

from .sharding import ContiguousShardSampler, ResumableDistributedSampler, check_rank
from .unreadable import BadImageError, UnreadableImage, unreadable_error

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BadImageError",
    "ImageFolderWithPolicy",
    "ImageNetLoader",
    "ImageNetLoaders",
    "Lighting",
    "build_imagenet_loaders",
    "imagenet_train_transform",
    "imagenet_val_transform",
    "load_imagenet_folders",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, [0, 1] units (torchvision's reference values)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Principal components of ImageNet RGB pixels in [0, 1] units (Krizhevsky et al. 2012, sec. 4.1; the
# values of fb.resnet.torch's transforms.lua): eigenvalues, and eigenvectors as columns.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
OFFICIAL_COUNTS = {"train": 1_281_167, "val": 50_000, "classes": 1000}
BAD_IMAGE_POLICIES = ("fail", "skip")


class Lighting(torch.nn.Module):
    """AlexNet-style PCA lighting noise: adds eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, std^2)
    per image and component. Input: float C x H x W (or ... x 3 x H x W) in [0, 1] units, before
    normalisation. Draws from torch's global generator, like torchvision's random transforms (DataLoader
    seeds each worker)."""

    def __init__(self, alpha_std: float = 0.1, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC) -> None:
        super().__init__()
        self.alpha_std = float(alpha_std)
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.alpha_std == 0:
            return image
        alpha = torch.randn(*image.shape[:-3], 3) * self.alpha_std
        rgb_shift = (alpha * self.eigval) @ self.eigvec.T  # rgb[i] = sum_j eigvec[i, j] * alpha[j] * eigval[j]
        return image + rgb_shift[..., :, None, None].to(image.dtype)

    def extra_repr(self) -> str:
        return f"alpha_std={self.alpha_std}"


def imagenet_train_transform(image_size: int = 224, lighting_std: float = 0.1, jitter: float = 0.4) -> T.Compose:
    """PIL image -> normalised float 3 x image_size x image_size, with the training augmentation.

    ``jitter`` (brightness, contrast, saturation) and ``lighting_std`` (PCA lighting): 0 leaves that step out,
    so "standard colour augmentation" can be read as fb.resnet.torch's both (0.4, 0.1), lighting only, or none."""
    colour = [T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)] if jitter > 0 else []
    lighting = [Lighting(lighting_std)] if lighting_std > 0 else []
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        T.RandomHorizontalFlip(),
        *colour,
        T.ToTensor(),
        *lighting,
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def imagenet_val_transform(image_size: int = 224, resize_size: int = 256) -> T.Compose:
    """PIL image -> normalised float 3 x image_size x image_size: resize the short side, centre crop."""
    return T.Compose([
        T.Resize(resize_size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ImageFolderWithPolicy(datasets.ImageFolder):
    """``ImageFolder`` with a policy for files that cannot be decoded: ``"fail"`` or ``"skip"``.

    Indexed directly, a bad file raises :class:`BadImageError` under ``"fail"`` and gives an
    :class:`UnreadableImage` under ``"skip"``. Inside :func:`build_imagenet_loaders` (``defer_errors``
    set) it always gives an :class:`UnreadableImage`, and :class:`ImageNetLoader` applies the policy in the
    main process: a worker's exception would arrive wrapped in a multi-line traceback, and it makes the
    DataLoader wait 5 s per worker at shutdown."""

    def __init__(self, root: str | Path, transform=None, on_bad_image: str = "fail") -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r} must be one of {', '.join(BAD_IMAGE_POLICIES)}")
        super().__init__(str(root), transform=transform)
        self.on_bad_image = on_bad_image
        self.defer_errors = False

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = self.loader(path)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged files
            unreadable = UnreadableImage(path, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            if self.on_bad_image == "fail" and not self.defer_errors:
                raise unreadable_error(unreadable) from None
            return unreadable
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def collate_skipping(samples: list) -> tuple:
    """default_collate of the readable samples, plus the unreadable ones: (images, labels, unreadable)."""
    unreadable = [s for s in samples if isinstance(s, UnreadableImage)]
    good = [s for s in samples if not isinstance(s, UnreadableImage)]
    images, labels = default_collate(good) if good else (None, None)
    return images, labels, unreadable


class ImageNetLoader:
    """A DataLoader whose batches come out on ``device`` in ``dtype`` / memory format; unreadable images
    are handled in the main process by ``on_bad_image``: ``"fail"`` raises :class:`BadImageError` naming
    the file, ``"skip"`` leaves them out of their batch, counts them (``num_skipped``) and warns naming them.
    ``set_epoch`` as usual."""

    def __init__(self, loader: DataLoader, device, dtype: torch.dtype, channels_last: bool, on_bad_image: str) -> None:
        self.loader, self.device, self.dtype, self.channels_last = loader, torch.device(device), dtype, channels_last
        self.on_bad_image = on_bad_image
        self.num_skipped = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch's order; ``start_batch`` > 0 skips the batches a resumed run has trained on."""
        sampler = self.loader.sampler
        if isinstance(sampler, ResumableDistributedSampler):
            sampler.set_epoch(epoch, start_batch * self.loader.batch_size)
        elif start_batch:
            raise ValueError("start_batch > 0 needs the training loader (evaluation always starts at 0)")

    @property
    def num_samples(self) -> int:
        """Samples this rank reads per epoch (before any skipped image)."""
        return len(self.loader.sampler) - (len(self.loader.sampler) % self.loader.batch_size) * self.loader.drop_last

    def __len__(self) -> int:
        return len(self.loader)

    def _handle_unreadable(self, unreadable: list[UnreadableImage]) -> None:
        if self.on_bad_image == "fail":
            raise unreadable_error(unreadable[0])
        self.num_skipped += len(unreadable)
        names = "; ".join(f"{u.path} ({u.error})" for u in unreadable)
        warnings.warn(f"skipped {len(unreadable)} unreadable image(s) (on_bad_image='skip'): {names}", stacklevel=3)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for images, labels, unreadable in self.loader:
            if unreadable:
                self._handle_unreadable(unreadable)
            if images is None:
                continue
            images = images.to(self.device, non_blocking=True).to(dtype=self.dtype, memory_format=memory_format)
            yield images, labels.to(self.device, non_blocking=True)


class ImageNetLoaders(NamedTuple):
    """(train, val) loaders of one rank (what result.json records of the data is built by the engine)."""

    train: ImageNetLoader
    val: ImageNetLoader


def load_imagenet_folders(
    root: str | Path, on_bad_image: str = "fail", image_size: int = 224, resize_size: int = 256, *,
    color_jitter: float = 0.4, lighting: float = 0.1,
) -> tuple[ImageFolderWithPolicy, ImageFolderWithPolicy]:
    """The train and val ``ImageFolder`` datasets with their transforms (``color_jitter`` and ``lighting``: the
    training colour augmentation, see :func:`imagenet_train_transform`); checks the layout."""
    root = Path(root).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{root / split}: folder missing; ImageNet is expected as {root}/train/<wnid>/*.JPEG and "
                f"{root}/val/<wnid>/*.JPEG (validation images sorted into class folders)"
            )
    train_transform = imagenet_train_transform(image_size, lighting_std=lighting, jitter=color_jitter)
    train = ImageFolderWithPolicy(root / "train", train_transform, on_bad_image)
    val = ImageFolderWithPolicy(root / "val", imagenet_val_transform(image_size, resize_size), on_bad_image)
    if train.classes != val.classes:
        raise ValueError(
            f"{root / 'val'}: {len(val.classes)} class folders differ from the {len(train.classes)} of "
            f"{root / 'train'} (train/val class mismatch)"
        )
    return train, val


def is_official_imagenet(train: ImageFolderWithPolicy, val: ImageFolderWithPolicy) -> bool:
    """The image and class counts of ILSVRC2012 (a count check: no checksums exist for the folders)."""
    counts = {"train": len(train), "val": len(val), "classes": len(train.classes)}
    return counts == OFFICIAL_COUNTS


def build_imagenet_loaders(
    root: str | Path | tuple[ImageFolderWithPolicy, ImageFolderWithPolicy],
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    on_bad_image: str = "fail",
    pin_memory: bool | None = None,
    prefetch_factor: int = 4,
    eval_batch_size: int | None = None,
) -> ImageNetLoaders:
    """(train, val) loaders for this rank; ``batch_size`` is per rank.

    ``root`` may also be the (train, val) pair from :func:`load_imagenet_folders` (``on_bad_image`` is then
    theirs). Worker randomness derives from ``seed`` (DataLoader seeds each worker), the training order from
    (seed, epoch)."""
    check_rank(rank, world_size)
    train_set, val_set = load_imagenet_folders(root, on_bad_image) if not isinstance(root, tuple) else root
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    options = dict(workers=workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor, seed=seed)
    train_sampler = ResumableDistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed, drop_last=True)
    train_loader = _data_loader(train_set, batch_size, train_sampler, drop_last=True, **options)
    val_sampler = ContiguousShardSampler(len(val_set), rank, world_size)
    val_loader = _data_loader(val_set, eval_batch_size or batch_size, val_sampler, drop_last=False, **options)
    return ImageNetLoaders(
        train=ImageNetLoader(train_loader, device, dtype, channels_last, train_set.on_bad_image),
        val=ImageNetLoader(val_loader, device, dtype, channels_last, val_set.on_bad_image),
    )


def _data_loader(dataset: ImageFolderWithPolicy, batch_size: int, sampler, *, drop_last: bool, workers: int,
                 pin_memory: bool, prefetch_factor: int, seed: int) -> DataLoader:
    dataset.defer_errors = True  # ImageNetLoader applies dataset.on_bad_image in the main process
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,  # no worker restart (and re-import) every epoch
        prefetch_factor=prefetch_factor if workers > 0 else None,
        collate_fn=collate_skipping,
        generator=torch.Generator().manual_seed(seed),  # seeds the workers' random transforms
    )
