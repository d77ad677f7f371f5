"""Sharding across R ranks: disjoint training shards of one permutation, evaluation exactly once (no padding),
sums reduced across ranks. Fast tests build every rank's loader in one process; the slow test runs real
gloo processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from selectscale.data import ContiguousShardSampler, DeviceLoader, eval_shard_bounds, train_shard
from selectscale.engine.distributed import sum_across_ranks

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def rank_loaders(count, world_size, *, train, batch_size=64, seed=0, drop_last=None):
    images = torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return [
        DeviceLoader(images, torch.arange(count), batch_size, train=train, seed=seed, mean=MEAN, std=STD,
                     device="cpu", rank=rank, world_size=world_size, drop_last=drop_last)
        for rank in range(world_size)
    ]


def seen(loader, epoch=0):
    loader.set_epoch(epoch)
    return torch.cat([torch.empty(0, dtype=torch.int64)] + [labels for _, labels in loader])


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("epoch", [0, 5])
def test_training_shards_are_disjoint_equal_and_cover_all_but_the_remainder(world_size, epoch):
    loaders = rank_loaders(1017, world_size, train=True, drop_last=False)
    shards = [seen(loader, epoch) for loader in loaders]
    per_rank = 1017 // world_size
    assert all(shard.numel() == per_rank for shard in shards)  # equal step counts keep DDP in lock step
    union = torch.cat(shards)
    assert union.unique().numel() == union.numel() == per_rank * world_size  # disjoint
    assert len({len(loader) for loader in loaders}) == 1


def test_training_shards_come_from_one_permutation_and_leave_out_different_samples_each_epoch():
    loaders = rank_loaders(1001, 2, train=True, drop_last=False)  # 1001 = 2 x 500 + 1 left over per epoch
    left_out = []
    for epoch in range(4):
        union = torch.cat([seen(loader, epoch) for loader in loaders])
        left_out.append(sorted(set(range(1001)) - set(union.tolist())))
    assert all(len(missing) == 1 for missing in left_out) and len({m[0] for m in left_out}) > 1


def test_two_ranks_see_the_augmented_batches_of_one_process_split_by_stride():
    """Rank r's batch b is samples r, r + 2, ... of the 1-process batch b, crops and flips included,
    so R processes reproduce one process with R micro-batches (the engine's DDP test relies on it)."""
    (single,) = rank_loaders(512, 1, train=True, batch_size=64)
    ranks = rank_loaders(512, 2, train=True, batch_size=32)
    for loader in (single, *ranks):
        loader.set_epoch(3)
    for (images, labels), *per_rank in zip(single, *ranks, strict=True):
        for rank, (rank_images, rank_labels) in enumerate(per_rank):
            assert torch.equal(rank_images, images[rank::2]) and torch.equal(rank_labels, labels[rank::2])


def test_a_resumed_epoch_starts_at_its_batch_without_changing_the_batches():
    (loader,) = rank_loaders(512, 1, train=True, batch_size=64)
    loader.set_epoch(2)
    full = [images for images, _ in loader]
    loader.set_epoch(2, start_batch=3)
    resumed = [images for images, _ in loader]
    assert len(resumed) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(resumed, full[3:], strict=True))
    with pytest.raises(ValueError, match="start_batch=99"):
        loader.set_epoch(2, start_batch=99)

@pytest.mark.parametrize("count, world_size", [(1017, 2), (1017, 3), (1017, 4), (10_000, 3), (5, 8)])
def test_evaluation_shards_cover_the_test_set_exactly_once(count, world_size):
    shards = [seen(loader) for loader in rank_loaders(count, world_size, train=False, batch_size=100)]
    assert torch.equal(torch.cat(shards), torch.arange(count))  # contiguous, in order, no duplicate, no gap
    sizes = [shard.numel() for shard in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == count  # with 5 images on 8 ranks, 3 ranks get none


def test_distributed_sampler_would_count_test_images_twice_and_ours_does_not():
    """torchvision issue 4559: DistributedSampler pads the shards to equal length with repeated samples."""
    padded = [list(DistributedSampler(range(1017), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sum(map(len, padded)) == 1018  # one test image evaluated twice
    ours = [list(ContiguousShardSampler(1017, r, 2)) for r in range(2)]
    assert sorted(ours[0] + ours[1]) == list(range(1017)) and [len(s) for s in ours] == [509, 508]


def test_shard_helpers():
    assert [eval_shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert train_shard(torch.arange(10), 1, 3).tolist() == [1, 4, 7]
    with pytest.raises(ValueError, match=r"rank=3 must be an integer in \[0, world_size=3\)"):
        eval_shard_bounds(10, 3, 3)


def test_sum_across_ranks_is_the_identity_without_a_process_group():
    value = torch.tensor([3.0, 4.0])
    assert not dist.is_initialized() and sum_across_ranks(value) is value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        test_loader = rank_loaders(1017, world_size, train=False, batch_size=100)[rank]
        train_loader = rank_loaders(1017, world_size, train=True, drop_last=False)[rank]
        correct, total = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
        for _, labels in test_loader:  # "correct" = even labels, a stand-in for a model's hits
            correct += (labels % 2 == 0).sum()
            total += labels.numel()
        sums = sum_across_ranks(torch.stack([correct, total]))
        shards = [None] * world_size
        dist.all_gather_object(shards, (seen(test_loader).tolist(), seen(train_loader, 1).tolist()))
        results[rank] = (sums.tolist(), shards)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_real_gloo_processes_evaluate_every_image_once_and_reduce_sums(world_size):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(world_size, _free_port(), results), nprocs=world_size, join=True)
    for rank in range(world_size):
        (correct, total), shards = results[rank]
        assert (correct, total) == (509, 1017)  # 509 even numbers in 0..1016, each image counted once
        test_union = sum((test for test, _ in shards), [])
        assert test_union == list(range(1017))
        train_union = sum((train for _, train in shards), [])
        assert len(train_union) == len(set(train_union)) == 1017 // world_size * world_size


def test_resumable_sampler_skips_the_first_indices_of_the_same_order():
    from selectscale.data.sharding import ResumableDistributedSampler

    sampler = ResumableDistributedSampler(range(100), num_replicas=2, rank=1, shuffle=True, seed=3, drop_last=True)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, start_index=20)
    assert list(sampler) == full[20:] and len(sampler) == len(full) - 20
    sampler.set_epoch(5)
    assert len(list(sampler)) == 50 and list(sampler) != full
