"""SelectScale's cost in a full training step, HEAD's selection beside commit a6785d4's (issue 23; a benchmark,
not a timed test).

For each network and memory layout, three models of the same weights go through the engine's own training step
(``bench_train.Ours``: the composed config, DeviceLoader, ``train_epoch``, SGD), alternated round by round:

- ``none``: no drop layers;
- ``HEAD``: SelectScale as this checkout builds it (``drop=selectscale``);
- ``a6785d4``: the same layers, placed and configured alike, whose ``_drop`` calls commit a6785d4's
  ``select_scale`` (its ``functional.py`` read with ``git show``: the selection before random tie-breaking).

It prints step times and each SelectScale step over the no-drop step. The issue's target: <= 1.10x for resnet110
and wrn20_4, NCHW and channels-last. A regression in HEAD's selection shows as HEAD's ratio above a6785d4's.

    python scripts/bench_selection.py                             # resnet110 + wrn20_4, both layouts, batch 128
    python scripts/bench_selection.py --models resnet110 --batch-size 64 --layouts nchw
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_train import REPO, Ours, Timer, command_line, compose_config, cpu_label, emit_report, measure

from selectscale.drop import SelectScale
from selectscale.engine import register_configs
from selectscale.models import create_model

REFERENCE = "a6785d4"  # the last commit before the step overhead grew (issue 23)
LAYOUTS = {"nchw": "trainer.channels_last=false", "channels_last": "trainer.channels_last=true"}


def reference_functional(commit: str = REFERENCE):
    """Commit ``commit``'s selectscale/drop/functional.py as a module (it imports only torch and math)."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:selectscale/drop/functional.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"error: cannot read {commit}'s functional.py ({error}): run this in a git clone "
                         "of the project with its history (git fetch --unshallow)") from error
    path = Path(tempfile.mkdtemp()) / f"functional_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"functional_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReferenceSelectScale(SelectScale):
    """HEAD's SelectScale layer (arguments, strength, placement) with the reference commit's ``select_scale``."""

    reference = None  # the reference functional module, set by main()

    def _drop(self, y: torch.Tensor, retain: torch.Tensor) -> torch.Tensor:
        return self.reference.select_scale(y, self.top_rate, retain, score=self.score,
                                           nonnegative_input=self.nonnegative_input)


def runners(model: str, layout: str, args: argparse.Namespace, images, labels) -> dict:
    device = torch.device("cpu")
    rates = [f"drop.top_rate={args.top_rate}", f"drop.retain_rate={args.retain_rate}", LAYOUTS[layout]]
    head_cfg = compose_config(model, "selectscale", "cpu", args.batch_size, rates)
    torch.manual_seed(0)
    factory = functools.partial(ReferenceSelectScale, top_rate=args.top_rate, retain_rate=args.retain_rate)
    reference_model = create_model(model, 10, drop=factory).to(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    return {"none": Ours(compose_config(model, "none", "cpu", args.batch_size, [LAYOUTS[layout]]), images, labels,
                         device),
            "HEAD": Ours(head_cfg, images, labels, device),
            REFERENCE: Ours(head_cfg, images, labels, device, model=reference_model)}


def bench(model: str, layout: str, args: argparse.Namespace) -> dict:
    generator = torch.Generator().manual_seed(0)
    count = args.batch_size * 8
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    variants, timer = runners(model, layout, args, images, labels), Timer(torch.device("cpu"))
    times, order = {name: [] for name in variants}, list(variants)
    for runner in variants.values():
        runner.steps(args.warmup)
    shuffler = random.Random(0)
    for _ in range(args.rounds):
        shuffler.shuffle(order)  # a new order every round: no variant always runs first or after another
        for name in order:
            times[name].append(measure(variants[name], args.steps, timer))
    return {name: {"median": statistics.median(v), "min": min(v), "spread": (max(v) - min(v)) / statistics.median(v)}
            for name, v in times.items()}


def render(rows: list[tuple], args: argparse.Namespace, command: str) -> str:
    lines = [f"## SelectScale in the step: HEAD vs {REFERENCE}, {cpu_label()}", "", f"- Command: `{command}`",
             f"- torch {torch.__version__}; batch {args.batch_size}; SelectScale top_rate {args.top_rate}, retain_rate "
             f"{args.retain_rate}, after every BN of every block; fp32; the engine's step; {args.rounds} rounds of "
             f"{args.steps} steps, the three variants in a new random order each round; ratios of medians (of "
             "minima in brackets: the least disturbed round); spread = (max - min) / median over rounds, worst "
             "variant.", "",
             f"| model | layout | no drop (ms) | HEAD (ms) | {REFERENCE} (ms) | HEAD / no drop | {REFERENCE} / no drop "
             "| HEAD / " + REFERENCE + " | spread |", "|---|---|---|---|---|---|---|---|---|"]

    def ratio(t, a, b):
        return f"{t[a]['median'] / t[b]['median']:.2f}x ({t[a]['min'] / t[b]['min']:.2f}x)"

    for model, layout, t in rows:
        spread = max(v["spread"] for v in t.values())
        lines.append(f"| {model} | {layout} | {1000 * t['none']['median']:.0f} | {1000 * t['HEAD']['median']:.0f} | "
                     f"{1000 * t[REFERENCE]['median']:.0f} | {ratio(t, 'HEAD', 'none')} | "
                     f"{ratio(t, REFERENCE, 'none')} | {ratio(t, 'HEAD', REFERENCE)} | {100 * spread:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet110", "wrn20_4"])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--top-rate", type=float, default=0.2)
    parser.add_argument("--retain-rate", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="append the Markdown report to this file")
    args = parser.parse_args(argv)
    register_configs()
    ReferenceSelectScale.reference = reference_functional()
    rows = []
    for model in args.models:
        for layout in args.layouts:
            rows.append((model, layout, bench(model, layout, args)))
            print(f"{model} {layout}: " + ", ".join(f"{k} {1000 * v['median']:.0f} ms"
                                                    for k, v in rows[-1][2].items()), flush=True)
    emit_report(render(rows, args, command_line("bench_selection.py", argv)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
