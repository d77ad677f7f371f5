"""Which samples each of R ranks sees, in training and in evaluation.

Training: every rank draws the same seeded permutation and takes every R-th entry from its own offset, so
shards are disjoint; each rank gets floor(N / R) samples (equal step counts keep DDP in lock step), and the
N mod R left over are the permutation's tail, different samples every epoch.

Evaluation: contiguous, non-overlapping shards whose sizes differ by at most one and cover every sample
exactly once. torch's ``DistributedSampler`` pads the last shard with repeated samples instead, which counts
some test images twice (torchvision issue 4559); here nothing is padded, and the metrics are reduced as sums
(correct predictions, sample count) with the engine's ``sum_across_ranks``, never as means of per-rank means.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "ContiguousShardSampler", "ResumableDistributedSampler", "check_rank", "eval_shard_bounds", "train_shard",
]


def check_rank(rank: int, world_size: int) -> None:
    """Raise ``ValueError`` unless 0 <= rank < world_size."""
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size={world_size!r} must be an integer >= 1")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank={rank!r} must be an integer in [0, world_size={world_size})")


def train_shard(permutation: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's floor(N / R) entries of ``permutation``: positions rank, rank + R, rank + 2R, ..."""
    check_rank(rank, world_size)
    per_rank = permutation.numel() // world_size
    return permutation[rank : per_rank * world_size : world_size]


def eval_shard_bounds(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous evaluation shard; the first N mod R ranks get one more."""
    check_rank(rank, world_size)
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ContiguousShardSampler(Sampler[int]):
    """Sampler over this rank's evaluation shard (:func:`eval_shard_bounds`), in order, without padding."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop = eval_shard_bounds(num_samples, rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way: ``set_epoch(epoch, start_index)`` skips the
    first ``start_index`` indices of this rank's order (a run resumed mid-epoch; nothing is decoded twice)."""

    start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start_index, None)

    def __len__(self) -> int:
        return super().__len__() - self.start_index
