"""Where a training step's time goes: torch.profiler over a few steps of train.py's path, and the cost of
the map scores in either memory format (the measurements behind results/benchmarks.md's notes).

    python scripts/profile_train.py --model resnet110 --drop selectscale --overrides trainer.precision=bf16
    python scripts/profile_train.py --scores        # max |y| over H x W: NCHW, channels-last naive, ours
    python scripts/profile_train.py --model resnet110 --drop selectscale --against none --batch-size 64
        # per-op self CPU time a step adds over the --against method: profiled in turn, twice each, so an op's
        # change between two profiles of the same model (the noise) is printed beside it
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train import Ours, compose_config

from selectscale.drop.functional import feature_map_scores
from selectscale.engine import register_configs


def profiled_runner(args: argparse.Namespace, drop: str):
    device = torch.device(args.device)
    cfg = compose_config(args.model, drop, device.type, args.batch_size, args.overrides)
    images = torch.randint(0, 256, (8 * args.batch_size, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (8 * args.batch_size,))
    runner = Ours(cfg, images, labels, device)
    runner.steps(2)  # warm-up
    return runner


def op_milliseconds(runner, steps: int) -> tuple[dict[str, float], object]:
    """Self CPU milliseconds per step of every op over ``steps`` steps, and the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        runner.steps(steps)
    return {event.key: event.self_cpu_time_total / steps / 1000 for event in profiler.key_averages()}, profiler


def profile_steps(args: argparse.Namespace) -> None:
    register_configs()
    _, profiler = op_milliseconds(profiled_runner(args, args.drop), args.steps)
    print(f"{args.model} drop={args.drop} {' '.join(args.overrides)}: {args.steps} steps of batch {args.batch_size}")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def profile_delta(args: argparse.Namespace) -> None:
    """The ops whose time a step of ``--drop`` adds over one of ``--against``, with the noise beside them."""
    register_configs()
    runners = {drop: profiled_runner(args, drop) for drop in (args.drop, args.against)}
    profiles = {drop: [] for drop in runners}
    for _ in range(2):
        for drop, runner in runners.items():
            profiles[drop].append(op_milliseconds(runner, args.steps)[0])

    def mean(drop: str, op: str) -> float:
        return sum(p.get(op, 0.0) for p in profiles[drop]) / 2

    def noise(op: str) -> float:
        return max(abs(p[0].get(op, 0.0) - p[1].get(op, 0.0)) for p in profiles.values())

    totals = {drop: sum(sum(p.values()) for p in values) / 2 for drop, values in profiles.items()}
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps a profile, {' '.join(args.overrides)}: "
          f"{args.drop} {totals[args.drop]:.0f} ms a step, {args.against} {totals[args.against]:.0f} ms (self CPU)")
    print(f"| op | {args.drop} - {args.against} (ms/step) | noise: largest change between two profiles of one model |")
    print("|---|---|---|")
    ops = set().union(*(p for values in profiles.values() for p in values))
    for op in sorted(ops, key=lambda op: mean(args.against, op) - mean(args.drop, op))[:args.rows]:
        print(f"| {op} | {mean(args.drop, op) - mean(args.against, op):+.1f} | {noise(op):.1f} |")


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
    parser.add_argument("--against", default=None, help="print per-op differences against this drop method")
    args = parser.parse_args()
    if args.scores:
        time_scores(args.batch_size)
    elif args.against:
        profile_delta(args)
    else:
        profile_steps(args)


if __name__ == "__main__":
    main()
