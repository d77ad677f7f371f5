"""A generated, learnable CIFAR-shaped data set for the demo and the fast tests.

Each class is a plaid: a product of a horizontal and a vertical sinusoid with class-specific frequencies
(cycles per 32 pixels, whatever the image size), ``cos(2 pi fx x / 32 + a) * sin(2 pi fy y / 32 + b)``.
Every image draws its own phases a, b (uniform), colour (each channel's gain in [0.4, 1]), amplitude,
brightness offset, and Gaussian pixel noise. Because the phases are uniform, the value of any single pixel has the same
distribution for every class: no single pixel (nor the mean image) tells the classes apart, while a small
convolutional network finds the frequencies within one short epoch. A horizontal flip or a translation
only changes the phases, so the standard CIFAR augmentation keeps every image in its class.

The class frequencies form an m x m grid, m = ceil(sqrt(num_classes)), geometrically spaced from 2 to 10
cycles per 32 pixels (up to 12 for more than 16 classes); the first ``num_classes`` pairs of a fixed
shuffle of the grid are used.
"""

from __future__ import annotations

import math

import torch

from .cifar import CifarSplit
from .loader import seeded_generator

__all__ = ["make_synthetic", "synthetic_class_frequencies"]

CHUNK = 8192  # images generated at a time (float32 work buffers stay near 100 MB)


def synthetic_class_frequencies(num_classes: int) -> torch.Tensor:
    """num_classes x 2 (horizontal, vertical) frequencies in cycles per 32 pixels, distinct per class."""
    grid = math.ceil(math.sqrt(num_classes))
    highest = 10.0 if grid <= 4 else 12.0  # stays below the Nyquist limit of 16 cycles on 32 pixels
    levels = [2.0 * (highest / 2.0) ** (i / max(grid - 1, 1)) for i in range(grid)]
    pairs = torch.tensor([(fx, fy) for fy in levels for fx in levels])
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(20200101))
    return pairs[order[:num_classes]]


def _generate(count: int, frequencies: torch.Tensor, size: int, noise_std: float, generator) -> tuple:
    labels = torch.randint(0, len(frequencies), (count,), generator=generator)
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    position = torch.arange(size, dtype=torch.float32) * (2 * math.pi / 32)  # frequencies are per 32 pixels
    for start in range(0, count, CHUNK):
        chunk_labels = labels[start : start + CHUNK]
        n = chunk_labels.numel()
        frequency = frequencies[chunk_labels]  # n x 2
        phase = torch.rand(n, 2, generator=generator) * (2 * math.pi)
        columns = torch.cos(frequency[:, :1] * position + phase[:, :1])  # n x S, along x
        rows = torch.sin(frequency[:, 1:] * position + phase[:, 1:])  # n x S, along y
        plaid = rows[:, None, :, None] * columns[:, None, None, :]  # n x 1 x S x S, in [-1, 1]
        gain = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=generator)  # per-image colour
        amplitude = 24.0 + 32.0 * torch.rand(n, 1, 1, 1, generator=generator)  # grey levels
        brightness = 128.0 + 60.0 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
        noise = noise_std * torch.randn(n, 3, size, size, generator=generator)
        pixels = brightness + amplitude * gain * plaid + noise
        images[start : start + n] = pixels.round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


def make_synthetic(
    num_train: int,
    num_test: int,
    num_classes: int = 10,
    seed: int = 0,
    image_size: int = 32,
    noise_std: float = 30.0,
) -> tuple[CifarSplit, CifarSplit]:
    """Training and test splits of the synthetic plaid data set (uint8, 3 x ``image_size`` squared).

    Same arguments, same images (the test split uses its own random stream, so changing ``num_train``
    leaves the test images unchanged). ``noise_std`` is in grey levels; ``verified`` is always False."""
    for name, value, low in (("num_train", num_train, 1), ("num_test", num_test, 1), ("num_classes", num_classes, 2)):
        if not (isinstance(value, int) and value >= low):
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    if not (isinstance(image_size, int) and image_size >= 8):
        raise ValueError(f"image_size={image_size!r} must be an integer >= 8")
    frequencies = synthetic_class_frequencies(num_classes)
    classes = tuple(f"plaid_{fx:.1f}x{fy:.1f}" for fx, fy in frequencies.tolist())
    splits = []
    for split_name, count in (("train", num_train), ("test", num_test)):
        generator = seeded_generator("synthetic", seed, split_name)
        images, labels = _generate(count, frequencies, image_size, noise_std, generator)
        splits.append(CifarSplit(images, labels, classes, verified=False, name="synthetic"))
    return splits[0], splits[1]
