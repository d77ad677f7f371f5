"""How far a training step is from what this CPU can do (issue 23): ceilings and each network's fraction of them,
measured side by side in one run.

For each network at the paper's batch size (128):

- ``step``: one full training step of train.py's path (``bench_train.Ours``: the composed config, the engine's
  ``train_epoch``, the device-resident loader), as images/s and achieved GFLOP/s, where FLOPs are 3 x the
  forward FLOPs of the project's own counter (``count_macs``, 2 FLOPs a multiply-accumulate);
- ``convs alone``: every convolution of the network (the shapes a forward pass sees, found with hooks) run alone
  as forward + input gradient + weight gradient, in the step's memory format and precision: their FLOPs over
  their time, the most a step made of those convolutions could reach;
- ``matmul``: the best GFLOP/s of a large square matmul (fp32; bf16 too where the CPU has native bf16).

The fractions (step / convs alone, step / matmul) say where time goes: a step far below its convs' ceiling
loses it outside the convolutions (BatchNorm, ReLU, the optimizer, the loader, Python); convs far below the
matmul ceiling are small (16-channel) convolutions that the CPU cannot run at its peak.

    python scripts/bench_ceiling.py                                     # the four networks, the default precision
    python scripts/bench_ceiling.py --overrides trainer.precision=fp32  # fp32 where the default (auto) is bf16
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_train import Ours, command_line, compose_config, cpu_label, emit_report
from torch import nn

from selectscale.engine import register_configs
from selectscale.engine.model_setup import build_model
from selectscale.engine.steps import autocast_device
from selectscale.models.complexity import count_macs
from selectscale.runs.result import cpu_model

MODELS = ("resnet8", "resnet20", "resnet110", "wrn20_4")


def best_seconds(function, repeats: int, rounds: int) -> float:
    """The best (lowest) mean seconds of ``repeats`` calls over ``rounds`` rounds, after one warm-up call."""
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - start) / repeats)
    return min(times)


def matmul_gflops(size: int, dtype: torch.dtype, rounds: int) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / best_seconds(lambda: torch.mm(a, b), 3, rounds) / 1e9


def conv_shapes(network: nn.Module, batch: int, channels_last: bool) -> list[tuple]:
    """(input shape, conv module) of every Conv2d call in one forward pass, in order."""
    found = []
    hooks = [module.register_forward_hook(lambda m, inputs, _out: found.append((tuple(inputs[0].shape), m)))
             for module in network.modules() if isinstance(module, nn.Conv2d)]
    images = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        network.eval()(images.to(memory_format=torch.channels_last) if channels_last else images)
    for hook in hooks:
        hook.remove()
    return found


def convs_alone(network: nn.Module, batch: int, channels_last: bool, autocast: bool, rounds: int) -> tuple:
    """(GFLOP/s, seconds, FLOPs) of the network's convolutions run alone, forward + both gradients."""
    total_s, total_flops, cache = 0.0, 0, {}
    for shape, conv in conv_shapes(network, batch, channels_last):
        key = (shape, tuple(conv.weight.shape), conv.stride, conv.padding, conv.groups)
        if key not in cache:
            layer = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.groups, bias=conv.bias is not None)
            x = torch.randn(shape, requires_grad=True)
            if channels_last:
                layer, x = layer.to(memory_format=torch.channels_last), x.detach().to(
                    memory_format=torch.channels_last).requires_grad_()

            def step(layer=layer, x=x):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    out = layer(x)
                out.backward(torch.ones_like(out))

            out_hw = layer(x).shape[-2:]
            macs = shape[0] * conv.out_channels * out_hw[0] * out_hw[1] * (conv.in_channels // conv.groups) \
                * conv.kernel_size[0] * conv.kernel_size[1]
            cache[key] = (best_seconds(step, 2, rounds), 3 * 2 * macs)
        seconds, flops = cache[key]
        total_s, total_flops = total_s + seconds, total_flops + flops
    return total_flops / total_s / 1e9, total_s, total_flops


def bench_network(model: str, args: argparse.Namespace) -> dict:
    cfg = compose_config(model, "none", "cpu", args.batch_size, args.overrides)
    count = args.batch_size * 8
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (count,), generator=torch.Generator().manual_seed(1))
    runner = Ours(cfg, images, labels, torch.device("cpu"))
    runner.steps(args.warmup)
    step_s = statistics.median(best_seconds(lambda: runner.steps(1), args.steps, 1) for _ in range(args.rounds))
    with torch.device("meta"):
        macs = count_macs(build_model(cfg, 10, torch.device("meta")), 32)
    step_flops = 3 * 2 * macs * args.batch_size
    conv_gflops, conv_s, conv_flops = convs_alone(build_model(cfg, 10, torch.device("cpu")), args.batch_size,
                                                  cfg.trainer.channels_last, args.bf16_step, args.rounds)
    return dict(model=model, step_s=step_s, images_s=args.batch_size / step_s, step_gflops=step_flops / step_s / 1e9,
                conv_gflops=conv_gflops, conv_share=conv_s / step_s, conv_flops_share=conv_flops / step_flops)


def render(rows: list[dict], ceilings: dict, args: argparse.Namespace, command: str) -> str:
    matmul = ceilings["fp32"] if not args.bf16_step else ceilings.get("bf16", ceilings["fp32"])
    lines = [f"## Ceilings and fractions, {datetime.date.today()}: {cpu_label()}",
             "", f"- Command: `{command}`",
             f"- torch {torch.__version__}; batch {args.batch_size}; train.py overrides: "
             f"{' '.join(args.overrides) or '(defaults)'}; step: median of {args.rounds} rounds, best mean of "
             f"{args.steps} steps each; ceilings: best of {args.rounds} rounds.",
             "- Matmul ceiling: " + ", ".join(f"{dtype} {value:,.0f} GFLOP/s ({args.matmul}x{args.matmul})"
                                             for dtype, value in ceilings.items()), "",
             "| model | step img/s | step GFLOP/s | its convs alone GFLOP/s | step / convs alone | step / matmul "
             "| convs' time in a step if alone | FLOPs in convs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['images_s']:,.0f} | {r['step_gflops']:,.0f} | {r['conv_gflops']:,.0f} | "
                     f"{100 * r['step_gflops'] / r['conv_gflops']:.0f}% | {100 * r['step_gflops'] / matmul:.0f}% | "
                     f"{100 * r['conv_share']:.0f}% | {100 * r['conv_flops_share']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--overrides", nargs="*", default=[], help="train.py overrides, e.g. trainer.precision=fp32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matmul of the ceiling")
    parser.add_argument("--out", type=Path, default=None, help="append the Markdown report to this file")
    args = parser.parse_args(argv)
    register_configs()
    # the step's arithmetic: trainer.precision as train.py resolves it here (auto: bf16 on a CPU with native bf16)
    args.bf16_step = autocast_device(compose_config("resnet20", "none", "cpu", 128, args.overrides),
                                     torch.device("cpu")) == "cpu"
    ceilings = {"fp32": matmul_gflops(args.matmul, torch.float32, args.rounds)}
    if cpu_model()[1]:
        ceilings["bf16"] = matmul_gflops(args.matmul, torch.bfloat16, args.rounds)
    rows = []
    for model in args.models:
        rows.append(bench_network(model, args))
        print(f"{model}: {rows[-1]['images_s']:,.0f} img/s, {rows[-1]['step_gflops']:,.0f} GFLOP/s", flush=True)
    emit_report(render(rows, ceilings, args, command_line("bench_ceiling.py", argv)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
