"""DeviceLoader: coverage, determinism, resume, augmentation against a per-image reference, normalisation,
dtypes and memory formats, argument checks. Labels are set to the image index so each output is traceable."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from selectscale.data import CIFAR_MEAN_STD, DeviceLoader, crop_and_flip, derive_seed
from selectscale.data import loader as loader_module

MEAN, STD = CIFAR_MEAN_STD["cifar10"]
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # output = the uint8 pixel values


def random_images(count, seed=0, size=32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def make_loader(count=1000, batch_size=64, *, train=True, seed=0, images=None, **kwargs):
    """Small 8 x 8 images unless given: batches stay below torch's parallel grain, so the tests take the same
    time whether or not another process holds the second CPU core."""
    images = random_images(count, size=8) if images is None else images
    options = dict(mean=MEAN, std=STD, device="cpu") | kwargs
    return DeviceLoader(images, torch.arange(len(images)), batch_size, train=train, seed=seed, **options)


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def epoch_order(loader, epoch):
    return torch.cat([labels for _, labels in epoch_batches(loader, epoch)])


def reference_crop_flip(image, offset_y, offset_x, flip, padding=4):
    """One image, the torchvision way: zero-pad, crop, then flip."""
    height, width = image.shape[-2:]
    crop = F.pad(image, (padding,) * 4)[:, offset_y : offset_y + height, offset_x : offset_x + width]
    return crop.flip(-1) if flip else crop


# --- coverage and batching ----------------------------------------------------------------------------------


def test_every_training_sample_appears_exactly_once_per_epoch():
    loader = make_loader(1000, 64, drop_last=False)
    assert len(loader) == 16 and loader.num_samples == 1000
    for epoch in (0, 1):
        batches = epoch_batches(loader, epoch)
        assert [len(labels) for _, labels in batches] == [64] * 15 + [40]
        assert torch.equal(torch.cat([labels for _, labels in batches]).sort().values, torch.arange(1000))


def test_drop_last_gives_full_batches_of_distinct_samples():
    loader = make_loader(1000, 64)  # drop_last defaults to True in training
    order = epoch_order(loader, 0)
    assert len(loader) == 15 and loader.num_samples == 960 and order.numel() == 960
    assert order.unique().numel() == 960


def test_evaluation_sees_every_image_once_in_order_without_augmentation():
    images = random_images(1017)
    loader = make_loader(train=False, batch_size=100, images=images, **IDENTITY)
    batches = list(loader)
    assert len(loader) == 11 and loader.num_samples == 1017 and len(batches[-1][1]) == 17
    assert torch.equal(torch.cat([labels for _, labels in batches]), torch.arange(1017))
    assert torch.equal(torch.cat([x for x, _ in batches]), images.float())


# --- determinism, epochs, resume ------------------------------------------------------------------------------


def test_same_seed_same_batches_and_different_seed_different_batches():
    first, second = epoch_batches(make_loader(seed=7), 0), epoch_batches(make_loader(seed=7), 0)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(epoch_order(make_loader(seed=8), 0), torch.cat([y for _, y in first]))


def test_each_epoch_has_its_own_order_and_augmentation():
    loader = make_loader(train=True, drop_last=False, **IDENTITY)
    orders = [epoch_order(loader, epoch) for epoch in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert not torch.equal(orders[0][:20], torch.arange(20))  # shuffled, not the file order
    assert torch.equal(epoch_order(loader, 1), orders[1])  # an epoch is a pure function of (seed, epoch)


def test_resuming_at_an_epoch_boundary_reproduces_the_batches_exactly():
    uninterrupted = make_loader(seed=3)
    for epoch in range(3):
        epoch_batches(uninterrupted, epoch)
    expected = epoch_batches(uninterrupted, 3)
    resumed = make_loader(seed=3)  # a new process, after loading a checkpoint taken at the end of epoch 2
    for (x1, y1), (x2, y2) in zip(expected, epoch_batches(resumed, 3), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("chunk_images", [1, 200, 100_000])
def test_batches_do_not_depend_on_the_augmentation_chunk_size(monkeypatch, chunk_images):
    """CPU and accelerators augment chunks of different sizes; the batches must be the same."""
    expected = epoch_batches(make_loader(1000, 64, drop_last=False), 1)
    monkeypatch.setitem(loader_module.CHUNK_IMAGES, "cpu", chunk_images)
    for (x1, y1), (x2, y2) in zip(expected, epoch_batches(make_loader(1000, 64, drop_last=False), 1), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_cpu_threads_apply_only_while_a_batch_is_built_and_do_not_change_the_batches():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        single = make_loader(drop_last=False, cpu_threads=1)
        seen_by_consumer = {torch.get_num_threads() for _ in single}
        assert seen_by_consumer == {2}  # the training loop keeps its own setting between batches
        unchanged = make_loader(drop_last=False, cpu_threads=None)
        for (x1, y1), (x2, y2) in zip(single, unchanged, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    finally:
        torch.set_num_threads(previous)


def test_derived_seeds_differ_for_nearby_inputs():
    seeds = {derive_seed(seed, epoch) for seed, epoch in itertools.product(range(20), range(20))}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)


# --- augmentation ----------------------------------------------------------------------------------------------


def test_crop_and_flip_matches_a_per_image_reference_for_every_offset_and_flip():
    combos = list(itertools.product(range(9), range(9), (False, True)))  # all 162 (row, column, flip)
    images = random_images(len(combos), seed=1)
    offsets = torch.tensor([(oy, ox) for oy, ox, _ in combos])
    flips = torch.tensor([flip for _, _, flip in combos])
    batched = crop_and_flip(images, offsets, flips, padding=4)
    for index, (oy, ox, flip) in enumerate(combos):
        assert torch.equal(batched[index], reference_crop_flip(images[index], oy, ox, flip)), (oy, ox, flip)


def test_padding_is_zero_black_pixels_before_normalisation():
    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = crop_and_flip(white, torch.tensor([[0, 0], [8, 8]]), torch.tensor([False, True]), padding=4)
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, :4] == 0).all() and (out[0, :, 4:, 4:] == 255).all()
    assert (out[1, :, -4:, :] == 0).all() and (out[1, :, :, :4] == 0).all()  # bottom rows; right side, flipped
    black = make_loader(train=False).normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    torch.testing.assert_close(black, -torch.tensor(MEAN) / torch.tensor(STD))  # a padded pixel after normalising


def all_crops(images, padding=4):
    """Every (flip, row offset, column offset) crop of each image, by unfold: B x 2 x 9 x 9 x C x H x W."""
    height, width = images.shape[-2:]
    windows = F.pad(images, (padding,) * 4).unfold(2, height, 1).unfold(3, width, 1)  # B x C x 9 x 9 x H x W
    windows = windows.permute(0, 2, 3, 1, 4, 5)
    return torch.stack([windows, windows.flip(-1)], dim=1)


def test_loader_outputs_are_shifted_flipped_copies_of_their_source_images():
    images = random_images(256, seed=2, size=16)
    loader = make_loader(images=images, batch_size=64, **IDENTITY)
    batch, labels = epoch_batches(loader, 0)[0]
    candidates = all_crops(images[labels]).float()
    equal = (candidates == batch[:, None, None, None]).flatten(4).all(-1)  # B x 2 x 9 x 9
    assert (equal.flatten(1).sum(1) == 1).all(), "each output must match exactly one crop of its source image"
    flip, offset_y, offset_x = equal.nonzero()[:, 1:].T
    assert len(set(zip(offset_y.tolist(), offset_x.tolist(), strict=True))) > 30 and set(flip.tolist()) == {0, 1}


def test_crop_offsets_are_uniform_over_the_81_positions_and_flips_are_half():
    loader = make_loader(16200, 100, images=torch.zeros(16200, 3, 1, 1, dtype=torch.uint8))
    offsets, flips = loader.epoch_augmentation()
    counts = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81)
    assert offsets.min() == 0 and offsets.max() == 8 and counts.numel() == 81
    assert counts.min() > 200 * 0.7 and counts.max() < 200 * 1.3  # 200 expected each, 4.5 sigma bounds
    assert abs(flips.float().mean().item() - 0.5) < 0.02  # 0.004 is one sigma


def test_flip_false_and_zero_padding_leave_images_unchanged_in_training():
    images = random_images(100, size=8)
    loader = make_loader(images=images, batch_size=50, flip=False, padding=0, **IDENTITY)
    for batch, labels in loader:
        assert torch.equal(batch, images[labels].float())


# --- normalisation, dtype, memory format ----------------------------------------------------------------------


def test_normalisation_uses_the_data_set_mean_and_std():
    images = random_images(64)
    out = next(iter(make_loader(images=images, train=False)))[0]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_requested_dtype_and_memory_format(dtype, channels_last, train):
    images = random_images(128)
    reference = next(iter(make_loader(images=images, train=train, batch_size=32)))[0]
    out, labels = next(iter(make_loader(images=images, train=train, batch_size=32, dtype=dtype,
                                        channels_last=channels_last)))
    assert out.dtype == dtype and out.shape == (32, 3, 32, 32) and labels.dtype == torch.int64
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    tolerance = {torch.float32: 0.0, torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]  # relative rounding
    torch.testing.assert_close(out.float(), reference, rtol=tolerance, atol=tolerance)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches():
    images = random_images(512)
    cpu = epoch_batches(make_loader(images=images, batch_size=128), 2)
    cuda = epoch_batches(make_loader(images=images, batch_size=128, device="cuda"), 2)
    for (x1, y1), (x2, y2) in zip(cpu, cuda, strict=True):
        assert x2.device.type == "cuda" and torch.equal(y1, y2.cpu())
        torch.testing.assert_close(x1, x2.cpu())


# --- argument checks ------------------------------------------------------------------------------------------


BAD_ARGUMENTS = [
    (dict(images=torch.rand(4, 3, 32, 32)), "uint8 N x C x H x W"),
    (dict(images=torch.zeros(4, 32, 32, dtype=torch.uint8)), "uint8 N x C x H x W"),
    (dict(labels=torch.arange(3)), "labels must be an integer tensor of shape (4,)"),
    (dict(labels=torch.zeros(4)), "labels must be an integer tensor"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(mean=(0.5, 0.5)), "need 3 values each"),
    (dict(std=(0.2, 0.0, 0.2)), "std > 0"),
    (dict(rank=2, world_size=2), "rank=2 must be an integer in [0, world_size=2)"),
    (dict(world_size=0), "world_size=0"),
    (dict(train=False, drop_last=True), "drop_last=True in evaluation"),
    (dict(batch_size=8), "no batch at all: 4 samples on rank 0 of 1, batch_size=8, drop_last=True"),
    (dict(padding=-1), "padding=-1"),
]


@pytest.mark.parametrize("change, fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_them(change, fragment):
    arguments = dict(images=random_images(4), labels=torch.arange(4), batch_size=2, train=True, seed=0,
                     mean=MEAN, std=STD, device="cpu") | change
    images, labels, batch_size = arguments.pop("images"), arguments.pop("labels"), arguments.pop("batch_size")
    with pytest.raises(ValueError) as error:
        DeviceLoader(images, labels, batch_size, **arguments)
    assert fragment in str(error.value)


def test_set_epoch_refuses_negative_epochs():
    with pytest.raises(ValueError, match="epoch=-1"):
        make_loader().set_epoch(-1)
