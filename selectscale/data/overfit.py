"""``dataset.overfit_batch`` (``debug=overfit_batch``): train on one fixed batch, over and over.

The standard sanity check of a training loop: a network that cannot drive the loss on a single batch towards 0
has a bug (labels shuffled against images, a broken backward, a learning rate that does nothing). The batch is
the first one of the training loader's epoch 0, without crop, flip or auto-augment, and every step of every
epoch trains on exactly those images and labels.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .loader import DeviceLoader

__all__ = ["RepeatedBatch"]


class RepeatedBatch:
    """One un-augmented batch of ``loader`` (this rank's share of it), yielded ``len(loader)`` times an epoch: a
    drop-in for the training :class:`DeviceLoader` (``set_epoch``, ``__len__``, ``num_samples``)."""

    def __init__(self, loader: DeviceLoader) -> None:
        if not loader.train:
            raise ValueError("overfit_batch repeats a training batch; this loader is an evaluation one")
        previous = loader.epoch
        loader.set_epoch(0)
        indices = loader.epoch_indices()[: loader.batch_size]  # epoch 0's first batch: a random draw of the set
        loader.set_epoch(previous)
        with torch.no_grad():
            self.images = loader.normalize(loader.images.index_select(0, indices))  # no crop, flip or augment
        self.labels = loader.labels.index_select(0, indices)
        self.batch_size, self.steps = loader.batch_size, len(loader)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.steps:
            raise ValueError(f"start_batch={start_batch!r} must be an integer in [0, {self.steps}]")
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def num_samples(self) -> int:
        """Images trained on per epoch on this rank (the same ``batch_size`` images each step)."""
        return self.steps * self.batch_size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.start_batch, self.steps):
            yield self.images, self.labels
