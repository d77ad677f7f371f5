"""RandAugment and TrivialAugmentWide for the device-resident CIFAR loader, one random draw per image.

torchvision's v2 transforms treat a batched tensor as one image: every image of a B x C x H x W batch gets the SAME
randomly chosen operations and magnitudes. Here each image is transformed on its own (a loop over the images of a
chunk, on the device the images are on), so that two images of one batch get independent operations.

The transforms draw from torch's global CPU generator. Each image's draw is seeded with its own seed (the loader
derives it from the run's seed, the epoch and the image's place in the epoch's global order, as it does the crops
and flips), inside ``torch.random.fork_rng``: the augmentation is a pure function of (seed, epoch, position), a
resumed run sees the same images, and the engine's global random stream (drop masks, mixing) is left untouched.
torchvision is imported only when an augmentation is asked for (it costs ~4 s to import on 2 cores).

Defaults are torchvision's: RandAugment with 2 operations at magnitude 9 of 31 bins, TrivialAugmentWide with 31
bins; nearest interpolation, fill 0 (black, as the crop padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

AUTO_AUGMENTS = ("randaugment", "trivialaugment")  # dataset.auto_augment's values besides null


def _build(name: str):
    from torchvision.transforms import v2

    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"auto_augment={name!r} is not known: use one of {', '.join(AUTO_AUGMENTS)} or None")


class PerImageAugment:
    """``augment(images, seeds)``: uint8 B x C x H x W -> uint8 B x C x H x W, image i transformed with its own
    random operations drawn from ``seeds[i]``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transform = _build(name)

    def __call__(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(seeds) != images.shape[0]:
            raise ValueError(f"{self.name}: expected uint8 B x C x H x W images and B seeds, got "
                             f"{tuple(images.shape)} {images.dtype} and {len(seeds)} seeds")
        augmented = torch.empty_like(images)
        with torch.random.fork_rng(devices=[]):  # the CPU generator only; restored afterwards
            for index, seed in enumerate(seeds):
                torch.default_generator.manual_seed(int(seed))
                augmented[index] = self.transform(images[index])
        return augmented


def build_auto_augment(name: str | None) -> PerImageAugment | None:
    """The per-image augmentation called ``name``, or None for None (off)."""
    return None if name is None else PerImageAugment(name)
