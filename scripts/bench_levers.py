"""Two CPU levers of issue 23 measured side by side in one run (a benchmark, not a test): the optimizer step
(SGD as a Python loop over the parameters, ``foreach``, ``fused``) and the evaluation pass (``no_grad``, the
engine's, against ``inference_mode``).

    python scripts/bench_levers.py                      # resnet20 + resnet110 + wrn20_4, batch 256 evaluation

Optimizer: the engine's SGD settings (momentum 0.9, Nesterov, weight decay 5e-4) on the network's parameters
with random gradients, one ``step()`` timed; the variants alternate round by round, median of the rounds.
Evaluation: a forward pass of the network in eval mode (channels-last, fp32) on a batch of random images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from bench_train import command_line, cpu_label, emit_report

from selectscale.models import create_model

OPTIMIZERS = {"loop": dict(foreach=False), "foreach (default)": dict(foreach=True), "fused": dict(fused=True)}


def timed(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def optimizer_ms(model: torch.nn.Module, rounds: int, repeats: int) -> dict[str, float]:
    optimizers = {}
    for name, kind in OPTIMIZERS.items():
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizers[name] = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, **kind)
        optimizers[name].step()  # momentum buffers exist from here on
    times = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, optimizer in optimizers.items():
            times[name].append(1000 * timed(optimizer.step, repeats))
    return {name: statistics.median(values) for name, values in times.items()}


def evaluation_ms(model: torch.nn.Module, batch: int, rounds: int) -> dict[str, float]:
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    modes = {"no_grad (engine)": torch.no_grad, "inference_mode": torch.inference_mode}
    times = {name: [] for name in modes}
    for _ in range(rounds + 1):  # the first round warms up
        for name, mode in modes.items():
            with mode():
                times[name].append(1000 * timed(lambda: model(images), 1))
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet110", "wrn20_4"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="optimizer steps per round")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [f"## Optimizer step and evaluation pass, {cpu_label()}", "",
             f"- Command: `{command_line('bench_levers.py', argv)}`",
             f"- torch {torch.__version__}; medians of {args.rounds} rounds, variants alternated; optimizer: "
             f"{args.repeats} steps a round; evaluation: one forward of {args.eval_batch} images a round, fp32, "
             "channels-last.", "",
             "| model | SGD " + " (ms) | SGD ".join(OPTIMIZERS)
             + " (ms) | eval no_grad (ms) | eval inference_mode (ms) |",
             "|---|" + "---|" * (len(OPTIMIZERS) + 2)]
    for model_name in args.models:
        model = create_model(model_name, 10)
        opt = optimizer_ms(model, args.rounds, args.repeats)
        evaluation = evaluation_ms(model, args.eval_batch, args.rounds)
        lines.append(f"| {model_name} | " + " | ".join(f"{v:.2f}" for v in opt.values()) + " | "
                     + " | ".join(f"{v:.0f}" for v in evaluation.values()) + " |")
        print(lines[-1], flush=True)
    emit_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
