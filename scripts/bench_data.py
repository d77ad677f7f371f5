"""Images per second of the data pipelines, measured side by side in one run (a benchmark, not a test).

1. The device-resident CIFAR loader (``selectscale.data.DeviceLoader``): whole training epochs of random
   crops + flips + normalisation on ``--device``, batch by batch, as training consumes them.
2. A torchvision-style pipeline on the same uint8 images: per-image PIL transforms RandomCrop(32, padding=4),
   RandomHorizontalFlip, ToTensor, Normalize, through a DataLoader with ``--workers`` worker processes
   (batches stay on the CPU, as a training loop would then copy them). Ratio = 1 / 2.
3. ImageNet decode + augmentation in one process (what one DataLoader worker does per image): generated
   JPEGs of ``--jpeg-size`` (smooth colour fields with noise; not ImageNet images), the training transform
   (RandomResizedCrop 224, flip, colour jitter, lighting, normalise) and the validation transform.

The images are random uint8 tensors of CIFAR's shape (the content does not change the cost). Each measurement
starts after a warm-up (one epoch / a few batches), and the clock stops after a device synchronisation.

    python scripts/bench_data.py                           # CPU, or CUDA when available
    python scripts/bench_data.py --device cpu --cpu-threads 1 2 --batch-sizes 128 512 --dtype bfloat16 --channels-last
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from selectscale.data import CIFAR_MEAN_STD, DeviceLoader, imagenet_train_transform, imagenet_val_transform

MEAN, STD = CIFAR_MEAN_STD["cifar10"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device_loader(images: torch.Tensor, batch_size: int, cpu_threads: int, args: argparse.Namespace) -> float:
    """Images per second over ``args.epochs`` timed training epochs, after one warm-up epoch."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    labels = torch.zeros(len(images), dtype=torch.int64)
    loader = DeviceLoader(images, labels, batch_size, train=True, seed=0, mean=MEAN, std=STD, device=device,
                          dtype=dtype, channels_last=args.channels_last, cpu_threads=cpu_threads)
    checksum = torch.zeros((), device=device)
    for epoch in range(args.epochs + 1):
        if epoch == 1:  # epoch 0 warms up allocator, kernels and caches
            synchronize(device)
            start = time.perf_counter()
        loader.set_epoch(epoch)
        for batch, _ in loader:
            checksum += batch[0, 0, 0, 0].float()  # keep every batch alive until consumed, like a model would
    synchronize(device)
    return loader.num_samples * args.epochs / (time.perf_counter() - start)


class PILCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: an HWC uint8 array -> PIL image -> transforms."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.transform = T.Compose([
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), 0


def bench_torchvision(images: torch.Tensor, args: argparse.Namespace) -> float:
    """Images per second of one shuffled pass over ``images``, after the first 10 batches (worker start)."""
    loader = DataLoader(PILCifar(images), batch_size=128, shuffle=True, num_workers=args.workers, drop_last=True)
    count, start = 0, None
    for step, (batch, _) in enumerate(loader):
        if step == 10:
            start, count = time.perf_counter(), 0
        count += len(batch)
    return count / (time.perf_counter() - start)


def write_jpegs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Generated JPEGs (quality 90): a smooth random colour field plus pixel noise, ``size`` = (W, H)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
        field = np.asarray(Image.fromarray(corners.astype(np.uint8)).resize(size, Image.BILINEAR), np.float32)
        pixels = np.clip(field + rng.normal(0, 20, field.shape), 0, 255).astype(np.uint8)
        path = folder / f"{index:05d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def bench_decode(paths: list[Path], transform, rounds: int = 2) -> float:
    """Images per second of open + decode + ``transform`` in this process (one thread, like a worker)."""
    def one_pass() -> None:
        for path in paths:
            with Image.open(path) as image:
                transform(image.convert("RGB"))

    one_pass()  # warm-up: file cache, PIL plugins
    start = time.perf_counter()
    for _ in range(rounds):
        one_pass()
    return rounds * len(paths) / (time.perf_counter() - start)


def bench_imagenet(args: argparse.Namespace) -> dict[str, float]:
    width, height = (int(v) for v in args.jpeg_size.split("x"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # DataLoader workers run with one torch thread
    try:
        with tempfile.TemporaryDirectory() as folder:
            paths = write_jpegs(Path(folder), args.jpeg_count, (width, height))
            kilobytes = sum(p.stat().st_size for p in paths) / len(paths) / 1024
            decode = bench_decode(paths, lambda image: image)  # convert("RGB") has decoded it
            train = bench_decode(paths, imagenet_train_transform())
            val = bench_decode(paths, imagenet_val_transform())
    finally:
        torch.set_num_threads(previous)
    return {"decode": decode, "train": train, "val": val, "kilobytes": kilobytes}


def cpu_pressure() -> str:
    """Linux PSI: the share of time some runnable task waited for a CPU (other processes included)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "not available"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-images", type=int, default=50_000, help="training images (CIFAR: 50,000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--cpu-threads", type=int, nargs="+", default=[None],
                        help="DeviceLoader(cpu_threads=...) values to measure on a CPU (default: torch's setting)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of the device loader")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision pipeline")
    parser.add_argument("--jpeg-size", default="500x375", help="W x H of the generated JPEGs")
    parser.add_argument("--jpeg-count", type=int, default=200)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-imagenet", action="store_true")
    args = parser.parse_args()

    print(f"# bench_data, {datetime.date.today()}, {machine()}, device {args.device}")
    images = torch.randint(0, 256, (args.num_images, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    baseline = None if args.skip_baseline else bench_torchvision(images, args)
    print("\n| pipeline | batch | images/s | x torchvision |\n|---|---|---|---|")
    if baseline is not None:
        print(f"| torchvision PIL transforms, DataLoader {args.workers} workers | 128 | {baseline:,.0f} | 1.0 |")
    for threads, batch_size in itertools.product(args.cpu_threads, args.batch_sizes):
        rate = bench_device_loader(images, batch_size, threads, args)
        ratio = f"{rate / baseline:,.1f}" if baseline else "-"
        setting = args.dtype + (", channels_last" if args.channels_last else "")
        if args.device == "cpu":
            setting += f", cpu_threads={threads}" if threads else f", {torch.get_num_threads()} torch threads"
        print(f"| DeviceLoader on {args.device} ({setting}) | {batch_size} | {rate:,.0f} | {ratio} |")
    print(f"\nCPU pressure (other load on the machine): {cpu_pressure()}")
    if not args.skip_imagenet:
        rates = bench_imagenet(args)
        print(f"\nImageNet-style decode + augmentation, one process, generated {args.jpeg_size} JPEGs "
              f"(quality 90, {rates['kilobytes']:.0f} KB average; not ImageNet images):")
        print("| work per image | images/s per worker |\n|---|---|")
        print(f"| decode only (PIL open + convert to RGB) | {rates['decode']:,.0f} |")
        print(f"| decode + train transform (RandomResizedCrop 224, flip, jitter, lighting, normalise) | "
              f"{rates['train']:,.0f} |")
        print(f"| decode + val transform (resize 256, centre crop 224, normalise) | {rates['val']:,.0f} |")


if __name__ == "__main__":
    main()
