"""Figure 3 of the paper: test error of a network trained *without* drop when drops act at inference.

``python -m selectscale.figures fig3 RUN_DIR`` loads a finished run's config and checkpoint, rebuilds the same
network with dropout, SpatialDropout or Selectout layers (and DropBlock, SelectDropBlock: issue 17) at the
paper's places (they have no parameters, so the weights load unchanged), keeps the model in eval mode
(BatchNorm uses its running statistics) and switches only the drop layers on with
:func:`selectscale.drop.apply_at_inference`. For each retaining rate it averages the test error over
``repeats`` random draws, then writes a Markdown table and a PNG plot. The paper's claim: Selectout's error
rises much faster than SpatialDropout's as the retaining rate falls, because it removes the maps with the
largest activations.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from selectscale.data import DeviceLoader, build_dataset
from selectscale.drop import apply_at_inference, drop_factory
from selectscale.engine.steps import evaluate
from selectscale.figures.errors import FigureError
from selectscale.figures.runs import training_record
from selectscale.models import create_model
from selectscale.runs import load_run

RETAIN_RATES = (1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)
SELECTOUT_TOP_RATE = 0.5  # Selectout needs 1 - p <= t: 0.5 admits every rate plotted, down to 0.5
# The paper's three methods, then DropBlock and its selecting version (issue 17): block 3 for CIFAR's 8-32 px
# maps; SelectDropBlock on the same top half of the maps as Selectout, so the two selecting methods compare.
METHOD_ARGUMENTS = {
    "dropout": {},
    "spatial_dropout": {},
    "selectout": {"top_rate": SELECTOUT_TOP_RATE},
    "dropblock": {"block_size": 3},
    "select_dropblock": {"top_rate": SELECTOUT_TOP_RATE, "block_size": 3},
}
METHODS = tuple(METHOD_ARGUMENTS)


def method_label(method: str) -> str:
    """The legend entry: the method and the arguments it has besides the retaining rate."""
    extra = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in METHOD_ARGUMENTS[method].items())
    return f"{method} ({extra})" if extra else method


def test_error(model: torch.nn.Module, loader, device: torch.device) -> float:
    """Top-1 test error (a fraction) by the training loop's own evaluation (every test image once)."""
    return evaluate(model, loader, device)["test_top1_error"]


def error_with_drop_at_inference(cfg, weights: dict, loader, method: str, retain_rate: float, repeats: int,
                                 device: torch.device) -> list[float]:
    """Test errors of ``repeats`` passes with ``method`` at ``retain_rate`` active in an eval-mode model."""
    kwargs = dict(retain_rate=retain_rate, **METHOD_ARGUMENTS[method])
    options = {} if cfg.model.get("shortcut") is None else {"shortcut": cfg.model.shortcut}
    model = create_model(cfg.model.name, len(weights["fc.bias"]), drop=drop_factory(method, **kwargs), **options)
    model = model.to(device)
    model.load_state_dict(weights)
    model.eval()
    errors = []
    with apply_at_inference(model):
        for repeat in range(repeats):
            torch.manual_seed(repeat)
            errors.append(test_error(model, loader, device))
    return errors


def inference_drop_curves(run_dir: Path, data_root: str | None, repeats: int, device: str = "cpu") -> dict:
    """{method: [(retain_rate, mean error, std error)]}, plus the clean error under key ``clean``."""
    cfg, weights = _config_and_weights(run_dir)
    if cfg.dataset.name == "imagenet":
        raise FigureError(f"{run_dir} is an ImageNet run; Figure 3 is a CIFAR experiment (WRN-20-4 on CIFAR-10)")
    bundle = build_dataset(cfg.dataset.name, data_root or cfg.dataset.root, num_train=cfg.dataset.train_size,
                           num_test=cfg.dataset.test_size, num_classes=cfg.dataset.num_classes)
    loader = DeviceLoader(bundle.test.images, bundle.test.labels, 256, train=False, seed=0, mean=bundle.mean,
                          std=bundle.std, device=device)  # every test image once, no augmentation
    curves = {"clean": error_with_drop_at_inference(cfg, weights, loader, "dropout", 1.0, 1, torch.device(device))}
    for method in METHODS:
        points = []
        for rate in RETAIN_RATES:
            errors = error_with_drop_at_inference(cfg, weights, loader, method, rate, repeats, torch.device(device))
            points.append((rate, statistics.mean(errors), statistics.stdev(errors) if repeats > 1 else 0.0))
        curves[method] = points
    return curves


def render(curves: dict, run_dir: Path, out: Path, label: str, notes: tuple[str, ...] = ()) -> list[Path]:
    """results: ``fig3.md`` (the numbers) and ``fig3.png`` (the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for method in METHODS:
        rates, means, stds = zip(*curves[method], strict=True)
        axes.errorbar(rates, [100 * m for m in means], yerr=[100 * s for s in stds], marker="o", capsize=2,
                      label=method_label(method))
    axes.invert_xaxis()
    axes.set(xlabel="retaining rate at inference", ylabel="test error (%)", title=label)
    axes.legend()
    cfg, _ = _config_and_weights(run_dir)
    epochs, data = training_record(run_dir, cfg)
    figure.text(0.01, 0.01, f"{cfg.model.name}, seed {cfg.seed}; data: {data}; epochs: {epochs}", fontsize=6,
                color="0.3")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(out / "fig3.png", dpi=150)
    plt.close(figure)
    lines = [f"# Figure 3: drops applied at inference to a network trained without drop ({label})", "",
             f"- Run: `{run_dir}` (its config.yaml says how it was trained). Rendered by "
             f"`python -m selectscale.figures fig3 {run_dir}`; clean test error {100 * curves['clean'][0]:.2f}%.",
             "- Each cell: mean ± std of the test error (%) over the repeated random draws.",
             *[f"- {note}" for note in notes], "",
             "| retaining rate | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for index, rate in enumerate(RETAIN_RATES):
        cells = [f"{100 * curves[m][index][1]:.2f} ± {100 * curves[m][index][2]:.2f}" for m in METHODS]
        lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    (out / "fig3.md").write_text("\n".join(lines) + "\n")
    return [out / "fig3.md", out / "fig3.png"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished run trained without drop")
    parser.add_argument("--data", default=None, help="dataset.root, if it moved since training")
    parser.add_argument("--repeats", type=int, default=3, help="random draws per retaining rate")
    parser.add_argument("--label", default="", help="plot title, e.g. the data and schedule")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--note", action="append", default=[], help="a provenance line for fig3.md (repeatable)")


def run(args: argparse.Namespace) -> list[Path]:
    curves = inference_drop_curves(args.run_dir, args.data, args.repeats)
    return render(curves, args.run_dir, args.out, args.label or args.run_dir.name, tuple(args.note))


def _config_and_weights(run_dir: Path) -> tuple:
    """(config, weights) of a trained run (:func:`selectscale.runs.load_run`, with its belongs-to checks)."""
    run = load_run(run_dir)
    return run.config, run.weights
