"""Where a training step's time goes: torch.profiler over a few steps of train.py's path, and the cost of
the map scores in either memory format (the measurements behind results/benchmarks.md's notes).

    python scripts/profile_train.py --model resnet110 --drop selectscale --overrides trainer.cpu_amp=true
    python scripts/profile_train.py --scores        # max |y| over H x W: NCHW, channels-last naive, ours
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train import Ours, compose_config

from selectscale.drop.functional import feature_map_scores
from selectscale.engine import register_configs


def profile_steps(args: argparse.Namespace) -> None:
    register_configs()
    device = torch.device(args.device)
    cfg = compose_config(args.model, args.drop, device.type, args.batch_size, args.overrides)
    images = torch.randint(0, 256, (8 * args.batch_size, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (8 * args.batch_size,))
    runner = Ours(cfg, images, labels, device)
    runner.steps(2)  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        runner.steps(args.steps)
    print(f"{args.model} drop={args.drop} {' '.join(args.overrides)}: {args.steps} steps of batch {args.batch_size}")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def milliseconds(function, repeats: int = 30) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1000


def time_scores(batch_size: int) -> None:
    """max |y| per map: NCHW reductions, the plain reduction of a channels-last tensor, and ours."""
    print("| shape | NCHW amax+amin (ms) | channels-last amax+amin (ms) | channels-last, feature_map_scores (ms) |")
    print("|---|---|---|---|")
    for channels, size in ((16, 32), (32, 16), (64, 8), (64, 32)):
        y = torch.randn(batch_size, channels, size, size)
        y_last = y.contiguous(memory_format=torch.channels_last)
        cells = [milliseconds(lambda t=t: torch.maximum(t.amax((2, 3)), t.amin((2, 3)).neg())) for t in (y, y_last)]
        cells.append(milliseconds(lambda t=y_last: feature_map_scores(t)))
        print(f"| {batch_size} x {channels} x {size} x {size} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet110")
    parser.add_argument("--drop", default="selectscale")
    parser.add_argument("--overrides", nargs="*", default=[], help="train.py overrides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--scores", action="store_true", help="time the map scores instead of profiling steps")
    args = parser.parse_args()
    if args.scores:
        time_scores(args.batch_size)
    else:
        profile_steps(args)


if __name__ == "__main__":
    main()
