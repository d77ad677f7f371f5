"""How often the k-th and (k+1)-th feature-map scores tie, fp32 against bf16 autocast, on a trained network.

    python scripts/measure_ties.py RUN_DIR [--data ROOT] [--top-rates 0.1,0.2,0.4] [--out results/ties_bf16.md]

A tie at the boundary means the selection among the tied maps is decided by the random tie-breaking (issue 12),
not by the scores: fair, but not the paper's exact ranking. Under bf16 autocast the maps themselves are rounded to
8 mantissa bits, so scores (max |y| of a map) tie far more often than in fp32. The run's weights are loaded into
the same network with SelectScale slots (drop layers hold no state), evaluated in eval mode (the slots are the
identity, so what they see is the trained network's own maps), on the run's test images.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selectscale.drop import drop_layers
from selectscale.drop.functional import feature_map_scores, num_top_maps
from selectscale.engine.model_setup import build_model
from selectscale.figures.runs import load_trained_run, open_split


def boundary_ties(scores: torch.Tensor, k: int) -> tuple[int, int]:
    """(samples whose k-th and (k+1)-th highest scores are equal, of those how many at score 0)."""
    if k >= scores.shape[1]:
        return 0, 0
    ordered = scores.sort(dim=1, descending=True).values
    tied = ordered[:, k - 1] == ordered[:, k]
    return int(tied.sum()), int((tied & (ordered[:, k] == 0)).sum())


def layer_scores(model, images: torch.Tensor, bf16: bool, batch: int = 256) -> dict[str, torch.Tensor]:
    """Scores (N x C, float32) of the maps every drop slot sees, per slot name, in fp32 or under bf16 autocast."""
    captured: dict[str, list[torch.Tensor]] = {}
    names = {module: name for name, module in model.named_modules()}
    hooks = []
    for layer in drop_layers(model):
        def hook(module, inputs, name=names[layer]):
            captured.setdefault(name, []).append(
                feature_map_scores(inputs[0], module.score, module.nonnegative_input))
        hooks.append(layer.register_forward_pre_hook(hook))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        with torch.no_grad(), autocast:
            for start in range(0, images.shape[0], batch):
                model(images[start:start + batch])
    finally:
        for handle in hooks:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


def measure(run_dir: Path, data_root: str | None, top_rates: list[float]) -> list[str]:
    cfg, weights = load_trained_run(run_dir)
    split, _ = open_split(cfg, data_root, training=False)
    images, _ = split.load(list(range(len(split.labels))))
    slots = OmegaConf.merge(cfg, {"drop": {"name": "selectscale", "top_rate": 0.2, "retain_rate": 0.1},
                                  "trainer": {"channels_last": False}})
    model = build_model(slots, len(split.classes), torch.device("cpu"))
    model.load_state_dict(weights, strict=True)
    model.eval()
    per_precision = {precision: layer_scores(model, images, precision == "bf16") for precision in ("fp32", "bf16")}
    lines = ["| top rate | precision | (sample, layer) pairs | boundary ties | of them at score 0 | worst layer |",
             "|---|---|---|---|---|---|"]
    for top_rate in top_rates:
        for precision, scores in per_precision.items():
            pairs = ties = zero_ties = 0
            worst = ("", -1.0)
            for name, layer in scores.items():
                k = num_top_maps(top_rate, layer.shape[1])
                tied, at_zero = boundary_ties(layer, k)
                pairs, ties, zero_ties = pairs + layer.shape[0], ties + tied, zero_ties + at_zero
                worst = max(worst, (f"{name} (C={layer.shape[1]}, k={k}): {100 * tied / layer.shape[0]:.1f}%",
                                    tied / layer.shape[0]), key=lambda item: item[1])
            lines.append(f"| {top_rate} | {precision} | {pairs} | {ties} ({100 * ties / pairs:.2f}%) | "
                         f"{zero_ties} | {worst[0]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (config.yaml + checkpoint.pt)")
    parser.add_argument("--data", default=None, help="dataset.root, when it moved since training")
    parser.add_argument("--top-rates", default="0.1,0.2,0.4", help="comma-separated top rates t (k = round(t C))")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    args = parser.parse_args(argv)
    top_rates = [float(value) for value in args.top_rates.split(",")]
    torch.manual_seed(0)
    lines = measure(args.run_dir, args.data, top_rates)
    header = [f"Command: `python scripts/measure_ties.py {args.run_dir} --top-rates {args.top_rates}`",
              f"Machine: {platform.machine()} CPU, torch {torch.__version__}; eval mode, every test image of the run.",
              ""]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
