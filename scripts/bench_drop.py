"""Forward + backward cost of each drop layer, measured side by side in one run (a benchmark, not a test).

For every channel count C the same N x C x H x W tensor goes through: identity, a bare per-map
multiply ``x * f`` (the floor: any per-map scaling must read and write the tensor), each drop
layer in training mode, and the 3x3 convolution C -> C of the same shape. The methods are timed
round-robin (one repetition of each, then the next round) so that drift in the machine's speed
hits all of them alike; the median over rounds is reported, in milliseconds, with ratios.

    python scripts/bench_drop.py                      # CPU, and CUDA when available
    python scripts/bench_drop.py --channels 16 64 --rounds 5 --device cpu

``selectscale, topk ties (before)`` is the selection as it was before random tie-breaking (plain ``topk``), so
the cost of breaking ties at random is read off one table. ``Selective(SpatialScale)`` is SelectScale built
with the generic wrapper (gather the selected maps, drop, scatter back), beside the dedicated layer (issue 17).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from selectscale.drop import Selective, SpatialScale, build_drop, feature_map_scores
from selectscale.drop.functional import num_top_maps

METHODS = {
    "dropout": dict(retain_rate=0.9),
    "spatial_dropout": dict(retain_rate=0.9),
    "spatial_scale": dict(retain_rate=0.4),
    "selectout": dict(top_rate=0.2, retain_rate=0.9),
    "selectscale": dict(top_rate=0.2, retain_rate=0.1),
    "dropblock": dict(retain_rate=0.9, block_size=3),
    "select_dropblock": dict(top_rate=0.2, retain_rate=0.9, block_size=3),
}


class TopkTiesSelectScale(nn.Module):
    """SelectScale as it was before random tie-breaking (issue 12): ``torch.topk`` on the float scores, which
    always takes the lowest channel index among ties. Kept here only as the speed reference."""

    def __init__(self, top_rate: float, retain_rate: float) -> None:
        super().__init__()
        self.top_rate, self.retain_rate = top_rate, retain_rate

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        scores = feature_map_scores(y)
        chosen = scores.topk(num_top_maps(self.top_rate, y.shape[1]), dim=1, sorted=False).indices
        spread = 1.0 - self.retain_rate
        factors = 1.0 + spread * (2.0 * torch.rand(chosen.shape, device=y.device) - 1.0)
        return y * torch.ones_like(scores).scatter(1, chosen, factors).to(y.dtype)[:, :, None, None]


class BareMultiply(nn.Module):
    """y * f with one fixed factor per (sample, channel): the memory-traffic floor."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        factors = torch.rand(y.shape[0], y.shape[1], 1, 1, device=y.device, dtype=y.dtype)
        return y * factors


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Milliseconds of one call: CUDA events on GPU, a monotonic clock on CPU."""
    if device.type == "cuda":

        def time_cuda(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return time_cuda

    def time_cpu(fn: Callable[[], None]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return time_cpu


def _forward_backward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        module(x).backward(grad)

    return step


def bench_channels(channels: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    shape = (args.batch, channels, args.size, args.size)
    x = torch.randn(shape, device=device, requires_grad=True)
    grad = torch.randn(shape, device=device)
    modules: dict[str, nn.Module] = {"identity": nn.Identity(), "x * f": BareMultiply()}
    modules.update({name: build_drop(name, **kwargs) for name, kwargs in METHODS.items()})
    modules["selectscale, topk ties (before)"] = TopkTiesSelectScale(**METHODS["selectscale"])
    modules["Selective(SpatialScale)"] = Selective(SpatialScale(METHODS["selectscale"]["retain_rate"]),
                                                   top_rate=METHODS["selectscale"]["top_rate"])
    modules["conv3x3"] = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    steps = {name: _forward_backward(m.to(device).train(), x, grad) for name, m in modules.items()}
    timer = _timer(device)
    for step in steps.values():  # warm-up: allocator, kernels, oneDNN primitives
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(timer(step))
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(device: torch.device, results: dict[int, dict[str, float]]) -> None:
    names = list(next(iter(results.values())))
    print(f"\n## {device.type}: forward + backward, median ms (ratio to conv3x3 | ratio to x * f)")
    print("| method | " + " | ".join(f"C={c}" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = []
        for row in results.values():
            ms = row[name]
            cells.append(f"{ms:.2f} ({ms / row['conv3x3']:.3f} | {ms / row['x * f']:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64, 256, 512])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="height = width of the feature maps")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    args = parser.parse_args()
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.rounds} rounds")
    for device in devices:
        print_table(device, {c: bench_channels(c, args, device) for c in args.channels})


if __name__ == "__main__":
    main()
