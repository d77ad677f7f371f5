"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch on its device, with soft targets.

One draw per batch (as both papers' code and torchvision's v2 MixUp/CutMix): with probability ``prob`` the batch is
mixed with a random permutation of itself, with lam ~ Beta(alpha, alpha); otherwise its targets are its one-hot
labels. Mixup: images lam x + (1 - lam) x[perm]. CutMix: a box of area (1 - lam) H W, centred uniformly and clipped
to the image, pasted from x[perm]; lam is then the exact kept area fraction. With both alphas > 0, each mixed batch
is Mixup or CutMix with probability 1/2 (timm's switch_prob default). The targets are lam y + (1 - lam) y[perm]
(one-hot y), a probability vector per image that ``F.cross_entropy`` takes as it is (soft targets; label
smoothing, when set, is applied to them by the same call).

Our own batched implementation, not torchvision's v2 classes: those need torchvision imported (~4 s on 2 cores,
which the CIFAR path avoids), draw lam with a Beta distribution per call just as here, and pair images by a roll,
not a random permutation. Randomness comes from torch's global CPU generator (seeded by the engine per rank and
restored on resume with the checkpoint's cpu_rng); every draw is on the CPU, so a CUDA run syncs on nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchMixer:
    """``mixer(images, labels) -> (images, targets)``: targets float B x ``num_classes``, rows summing to 1."""

    mixup_alpha: float
    cutmix_alpha: float
    prob: float
    num_classes: int

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = F.one_hot(labels, self.num_classes).to(torch.float32)
        if float(torch.rand(())) >= self.prob:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(labels.shape[0]).to(images.device)
        if use_cutmix:
            images, lam = cutmix_images(images, perm, lam)
        else:
            images = images.mul(lam).add_(images.index_select(0, perm), alpha=1.0 - lam)
        return images, targets.mul(lam).add_(targets.index_select(0, perm), alpha=1.0 - lam)


def cut_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of CutMix's box: sides sqrt(1 - lam) H and W, centre drawn uniformly, clipped."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix_images(images: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """``images`` with one box (the same for the batch) pasted from ``images[perm]``, and the kept area fraction."""
    height, width = images.shape[-2:]
    top, bottom, left, right = cut_box(height, width, lam)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images.index_select(0, perm)[:, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def build_mixer(trainer, num_classes: int) -> BatchMixer | None:
    """The mixer of the trainer config (``mixup_alpha``, ``cutmix_alpha``, ``mix_prob``), or None when both alphas
    are 0 (off: no draw at all, so the default recipe's random stream is untouched)."""
    mixup, cutmix = float(trainer.get("mixup_alpha", 0.0)), float(trainer.get("cutmix_alpha", 0.0))
    if mixup <= 0 and cutmix <= 0:
        return None
    return BatchMixer(mixup, cutmix, float(trainer.get("mix_prob", 1.0)), int(num_classes))
