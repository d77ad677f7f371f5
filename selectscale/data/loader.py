"""Device-resident CIFAR-shaped batches with batched augmentation (in the style of airbench's loader).

The whole split lives on the training device as one uint8 N x C x H x W tensor (150 MB for CIFAR's 50,000
images). Each training epoch draws a seeded permutation and takes this rank's shard. Then, a chunk of whole
batches at a time, it selects the images and applies per-image random crops (zero padding, then a crop of
the original size) and per-image random horizontal flips with one ``gather``, in uint8; per batch it
converts to the requested dtype and normalises with the data set's mean/std. There is no Python loop over
images and no host-device traffic beyond the epoch's index and augmentation tensors.

Randomness is a pure function of (seed, epoch, rank): the permutation comes from a generator seeded with
(seed, epoch), the same on every rank, and the crop offsets and flips from one seeded with (seed, epoch,
rank). Both are drawn on the CPU, so a run resumed at an epoch boundary sees exactly the same batches, and
CPU and GPU runs see the same images.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .autoaugment import build_auto_augment
from .memory import fewer_images, memory_guard, split_bytes
from .sharding import check_rank, eval_shard_bounds, train_shard

__all__ = ["PADDING_MODES", "DeviceLoader", "channel_mean_std", "crop_and_flip", "derive_seed", "pad_images",
           "seeded_generator"]

# Images gathered and augmented together, in uint8. On an accelerator a chunk amortises kernel launches and
# Python dispatch (a dozen ops per chunk, not per batch); 8,192 CIFAR images use ~65 MB of uint8 buffers and
# a 64 MB int64 gather index. On a CPU, chunks that outgrow the caches are slower (measured: 1,024 images
# and one batch alike, 2,048 and 4,096 about 2x slower).
CHUNK_IMAGES = {"cpu": 1024}
DEFAULT_CHUNK_IMAGES = 8192


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed mixing ``parts`` (e.g. seed, epoch, rank) through SHA-256: nearby inputs such as
    (0, 1) and (1, 0) give unrelated streams, unlike ``seed + epoch``."""
    text = "/".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 N x C x H x W images, in [0, 1] units."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1, correction=0).tolist())


PADDING_MODES = ("zeros", "reflect")


def pad_images(images: torch.Tensor, padding: int, mode: str = "zeros") -> torch.Tensor:
    """B x C x H x W padded by ``padding`` pixels on every side: zeros (black for uint8, torchvision's
    ``RandomCrop(padding=4)``) or reflect (mirror without repeating the edge, ``padding_mode="reflect"``, as
    Zagoruyko's WRN code), by index selection so that uint8 works (F.pad reflects floats only)."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={mode!r} is not known: use one of {', '.join(PADDING_MODES)}")
    if mode == "zeros" or padding == 0:
        return F.pad(images, (padding, padding, padding, padding))
    height, width = images.shape[-2:]
    if padding >= min(height, width):
        raise ValueError(f"reflect padding of {padding} needs images larger than {padding} pixels, "
                         f"got {height}x{width}")
    rows, columns = (_reflected(size, padding, images.device) for size in (height, width))
    return images.index_select(2, rows).index_select(3, columns)


def _reflected(size: int, padding: int, device) -> torch.Tensor:
    """Source index of every padded position: -1 -> 1, size -> size - 2 (reflection about the edge pixel)."""
    index = torch.arange(-padding, size + padding, device=device).abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int,
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Per-image random crop and horizontal flip of a batch, in one gather (no loop over images).

    ``images``: B x C x H x W (any dtype; zero padding means black pixels for uint8, as torchvision's
    ``RandomCrop(padding=4)`` pads with fill 0 before normalisation; ``padding_mode="reflect"`` mirrors).
    ``offsets``: int64 B x 2, the (row, column) of each crop's top-left corner in the padded image, in
    [0, 2 * padding]. ``flips``: bool B.
    Output pixel (y, x) of image b is padded[b, :, oy + y, ox + x], or ox + W - 1 - x where flipped.
    (Measured on a CPU core, one gather with a B x H x W index is 3x faster than a row gather followed by a
    column gather with broadcast indices.)"""
    batch, channels, height, width = images.shape
    padded = pad_images(images, padding, padding_mode)
    padded_width = width + 2 * padding
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # B x H
    columns = torch.arange(width, device=images.device)
    columns = offsets[:, 1:] + torch.where(flips[:, None], width - 1 - columns, columns)  # B x W
    flat_index = (rows[:, :, None] * padded_width + columns[:, None, :]).view(batch, 1, height * width)
    cropped = padded.view(batch, channels, -1).gather(2, flat_index.expand(batch, channels, height * width))
    return cropped.view(batch, channels, height, width)


class DeviceLoader:
    """Batches of one split, already on ``device``, augmented in training, every image once in evaluation.

    Args:
        images: uint8 N x C x H x W, RGB (moved to ``device`` once).
        labels: integer N (moved to ``device`` as int64).
        batch_size: images per batch **on this rank** (the engine divides a global batch by world_size).
        train: True: per-epoch permutation, this rank's shard, random crops and flips. False: this rank's
            contiguous evaluation shard in order, no augmentation; with R ranks the shards cover every
            image exactly once (sizes may differ by one) and the last batch may be short.
        seed: the run's seed; permutation and augmentation = f(seed, epoch), sharded by rank.
        mean, std: per-channel, in [0, 1] units (e.g. ``CIFAR_MEAN_STD["cifar10"]``).
        device: where the data and the batches live.
        dtype: dtype of the image batches (float32, bfloat16, float16); normalisation is computed in float32.
        channels_last: return image batches in ``torch.channels_last`` memory format.
        rank, world_size: this process's place in distributed training.
        drop_last: drop the last short batch (default: ``train``; refused in evaluation).
        padding: padding before the random crop, in pixels (4 for CIFAR, as in the paper).
        padding_mode: ``zeros`` (torchvision's RandomCrop default) or ``reflect`` (Zagoruyko's WRN code).
        auto_augment: None (off), ``randaugment`` or ``trivialaugment``: torchvision v2 on each uint8 image after its
            crop and flip, before normalisation, with a random draw per image seeded by (seed, epoch, position)
            (:mod:`.autoaugment`). Training only.
        flip: random horizontal flips with probability 1/2 in training.
        cpu_threads: torch threads while a CPU loader builds a batch (None, the default: torch's setting).
            On an idle 2-core machine two threads were faster (389,000 vs 248,000 images/s at batch 128);
            when another process holds a core, one thread avoids waiting for it at every op (measured
            ~250,000 images/s on one thread against 5,000-15,000 on two). Restored before each yield.

    Call :meth:`set_epoch` before each epoch, like ``DistributedSampler``; iterating twice without it
    gives the same batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        padding: int = 4,
        flip: bool = True,
        cpu_threads: int | None = None,
        padding_mode: str = "zeros",
        auto_augment: str | None = None,
    ) -> None:
        _check_arguments(images, labels, batch_size, mean, std, padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not known: use one of {', '.join(PADDING_MODES)}")
        check_rank(rank, world_size)
        if not train and drop_last:
            raise ValueError("drop_last=True in evaluation would skip test images: it is only for training")
        self.device = torch.device(device)
        # The one allocation of the whole split on the device: a set too large for it is one line (ConfigError).
        with memory_guard("training set" if train else "test set", images.shape[0], split_bytes(images, labels),
                          self.device, fewer_images(train, self.device)):
            self.images = _place(images, self.device)
            self.labels = _place(labels, self.device, torch.int64)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.padding, self.flip, self.padding_mode = padding, flip, padding_mode
        self.cpu_threads = cpu_threads if self.device.type == "cpu" else None
        self.auto_augment = build_auto_augment(auto_augment) if train else None
        self.dtype, self.channels_last = dtype, channels_last
        std_tensor = torch.tensor(std, dtype=torch.float32)
        # x_normalised = (x / 255 - mean) / std = x * scale + shift, one fused multiply-add per pixel
        self.scale = (1.0 / (255.0 * std_tensor)).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std_tensor).view(1, -1, 1, 1).to(self.device)
        self.epoch, self.start_batch = 0, 0
        if train and len(self) == 0:  # an evaluation shard may be empty (more ranks than test images)
            raise ValueError(
                f"no batch at all: {self._shard_size()} samples on rank {rank} of {world_size}, "
                f"batch_size={batch_size}, drop_last={self.drop_last}"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose permutation and augmentation the next iteration uses, and the batch it
        starts at (a run resumed mid-epoch skips the batches it has trained on, without building them)."""
        if not (isinstance(epoch, int) and epoch >= 0):
            raise ValueError(f"epoch={epoch!r} must be an integer >= 0")
        if not (isinstance(start_batch, int) and 0 <= start_batch <= len(self)):
            raise ValueError(f"start_batch={start_batch!r} must be an integer in [0, {len(self)}]")
        self.epoch, self.start_batch = epoch, start_batch

    def _shard_size(self) -> int:
        total = self.labels.numel()
        if self.train:
            return total // self.world_size
        start, stop = eval_shard_bounds(total, self.rank, self.world_size)
        return stop - start

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        shard = self._shard_size()
        return shard - shard % self.batch_size if self.drop_last else shard

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return -(-self.num_samples // self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """Indices (into the split) of this rank's samples this epoch, in batch order, on the device."""
        if not self.train:
            start, stop = eval_shard_bounds(self.labels.numel(), self.rank, self.world_size)
            return torch.arange(start, stop, device=self.device)
        permutation = torch.randperm(self.labels.numel(), generator=seeded_generator(self.seed, self.epoch))
        shard = train_shard(permutation, self.rank, self.world_size)[: self.num_samples]
        return shard.to(self.device)

    def epoch_augmentation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop offsets (int64 n x 2, in [0, 2 * padding]) and flips (bool n) for this rank's epoch.

        Drawn for every position of the epoch's global order from (seed, epoch) alone, then sharded
        like the indices: an image gets the same crop and flip whatever the number of processes, so a
        run on R processes sees exactly the augmented batches of a 1-process run with R micro-batches."""
        generator = seeded_generator(self.seed, self.epoch, "augment")
        total = self.labels.numel()
        offsets = torch.randint(0, 2 * self.padding + 1, (total, 2), generator=generator)
        flips = torch.randint(0, 2, (total,), generator=generator).bool()
        if not self.flip:
            flips.zero_()
        positions = self.epoch_positions()
        return offsets[positions].to(self.device), flips[positions].to(self.device)

    def epoch_positions(self) -> torch.Tensor:
        """Positions in the epoch's global order (CPU int64) of this rank's training samples, in batch order."""
        return train_shard(torch.arange(self.labels.numel()), self.rank, self.world_size)[: self.num_samples]

    def auto_augment_seeds(self) -> list[int]:
        """One seed per training sample of this rank's epoch: f(seed, epoch, global position), whatever the ranks."""
        return [derive_seed(self.seed, self.epoch, "auto_augment", position)
                for position in self.epoch_positions().tolist()]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> ``dtype`` (and memory format), (x / 255 - mean) / std computed in float32."""
        normalised = torch.mul(images, self.scale).add_(self.shift)  # uint8 x float32 -> float32, one pass
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return normalised.to(dtype=self.dtype, memory_format=memory_format)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.epoch_indices()
        offsets, flips = self.epoch_augmentation() if self.train else (None, None)
        seeds = self.auto_augment_seeds() if self.auto_augment is not None else None
        # Gather and augment a chunk of whole batches at a time (see CHUNK_IMAGES); per batch, only the
        # normalisation runs. Every image keeps its own offsets and flip, so the batches do not depend on it.
        chunk_images = CHUNK_IMAGES.get(self.device.type, DEFAULT_CHUNK_IMAGES)
        chunk = max(1, chunk_images // self.batch_size) * self.batch_size
        for chunk_start in range(self.start_batch * self.batch_size, self.num_samples, chunk):
            chunk_indices = indices[chunk_start : chunk_start + chunk]
            with self._threads():
                images = self.images.index_select(0, chunk_indices)  # row copies, faster than images[idx]
                if self.train:
                    window = slice(chunk_start, chunk_start + chunk_indices.numel())
                    images = crop_and_flip(images, offsets[window], flips[window], self.padding,
                                           self.padding_mode)
                    if seeds is not None:
                        images = self.auto_augment(images, seeds[window])
                labels = self.labels.index_select(0, chunk_indices)
            for start in range(0, chunk_indices.numel(), self.batch_size):
                batch = slice(start, start + self.batch_size)
                with self._threads():
                    normalised = self.normalize(images[batch])
                yield normalised, labels[batch]

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.cpu_threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _place(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` on ``device`` (a copy unless it is there already): where a whole split is allocated."""
    return tensor.to(device) if dtype is None else tensor.to(device, dtype)


def _check_arguments(images, labels, batch_size, mean, std, padding) -> None:
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {shape} {getattr(images, 'dtype', '')}")
    if not (isinstance(labels, torch.Tensor) and labels.shape == images.shape[:1] and not labels.is_floating_point()):
        raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got {labels!r:.80}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(f"mean={tuple(mean)} and std={tuple(std)} need {channels} values each, std > 0")
    if not (isinstance(padding, int) and padding >= 0):
        raise ValueError(f"padding={padding!r} must be an integer >= 0")
