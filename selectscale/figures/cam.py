"""Class activation maps (Zhou et al. 2016) of trained runs side by side: the paper's Figures 1 and 5.

``python -m selectscale.figures cam RUN_DIR [RUN_DIR ...] --labels "no drop,SelectScale"`` (Figure 5): one
column per run, on test (ImageNet: validation) images. ``python -m selectscale.figures cam RUN_DIR --snapshots
--name cam_epochs`` (Figure 1): one column per weight snapshot of one run (``trainer.snapshot_epochs=[...]``),
on training images without augmentation, as the paper's Figure 1 shows training images.

A class activation map (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization") is
M_c(x, y) = sum_k w_k^c f_k(x, y): the last convolutional feature maps f_k weighted by the classifier's
weights w^c of class c. Every model here ends in global average pooling and one linear ``fc``, so the maps
need no retraining. The paper says SelectScale "finds more patterns" (its maps cover more of the object);
:func:`cam_spread` puts a number on that, a measure of ours, not the paper's.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from selectscale.data import DatasetBundle
from selectscale.engine.model_setup import build_model
from selectscale.figures.errors import FigureError
from selectscale.figures.runs import Split, data_identity, open_split, training_record
from selectscale.runs import load_run
from selectscale.runs.checkpoint import list_snapshots, load_weights

SPREAD_THRESHOLD = 0.5
BATCH = 50  # images per forward pass: bounds memory for ImageNet ResNet-50 (2048 x 7 x 7 features each)


def raw_class_activation_maps(features: Tensor, class_weights: Tensor) -> Tensor:
    """M_c(x, y) = sum_k w_k^c f_k(x, y) (Zhou et al. 2016), before upsampling and normalisation.

    ``features``: B x K x h x w; ``class_weights``: B x K, the ``fc`` row of each image's class. The bias
    is left out: it is the same at every location, so it would vanish in the normalisation anyway."""
    return torch.einsum("bk,bkhw->bhw", class_weights, features)


def normalise_maps(maps: Tensor) -> Tensor:
    """Each B x H x W map min-max scaled to [0, 1]; a constant map (no localisation at all) becomes zeros."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return (maps - low) / torch.where(span > 0, span, torch.ones_like(span))


def _maps_from_features(fc: nn.Linear, features: Tensor, classes: Tensor, size) -> Tensor:
    raw = raw_class_activation_maps(features.float(), fc.weight[classes].float())
    upsampled = F.interpolate(raw[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return normalise_maps(upsampled)  # after upsampling, so every map reaches exactly 0 and 1


@torch.no_grad()
def class_activation_maps(model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
    """B x H x W class activation maps of ``images`` (B x 3 x H x W, normalised) for ``classes`` (B).

    M_c(x, y) = sum_k w_k^c f_k(x, y) (Zhou et al. 2016) with f = ``model.features(images)`` and
    w^c = ``model.fc.weight[c]``, bilinearly upsampled to the image size, each map min-max normalised to
    [0, 1] (a constant map gives zeros). Puts ``model`` in eval mode: BatchNorm uses its running
    statistics and drop layers are off, as at test time."""
    model.eval()
    return _maps_from_features(model.fc, model.features(images), classes, images.shape[-2:])


def cam_spread(cams: Tensor, threshold: float = SPREAD_THRESHOLD) -> Tensor:
    """B: the fraction of each normalised map's pixels at or above ``threshold``.

    Our measure, not the paper's: a number for its claim that SelectScale "finds more patterns", i.e.
    that its maps spread over more of the image than those of a network trained without drop."""
    return (cams >= threshold).float().mean(dim=(1, 2))


@torch.no_grad()
def _cams_and_predictions(model: nn.Module, images: Tensor, labels: Tensor, target: str) -> tuple[Tensor, Tensor]:
    """Maps for the true or the predicted class, and the predictions, from one pass through the network."""
    features = model.features(images)
    logits = model.fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))  # = model(images): GAP, then fc
    predictions = logits.argmax(1)
    classes = predictions if target == "predicted" else labels
    return _maps_from_features(model.fc, features, classes, images.shape[-2:]), predictions


@dataclass
class Column:
    """One column of the grid: a network's weights and where they come from."""

    label: str
    run_dir: Path
    cfg: DictConfig
    weights: dict
    epochs: str  # how long these weights were trained, as recorded
    trained_on: str  # data set, verified flag, train/test sizes, as recorded


def run_columns(run_dirs: list[Path], labels: list[str] | None) -> list[Column]:
    """Figure 5: one column per finished run, all on the same data set."""
    labels = labels or [run_dir.name for run_dir in run_dirs]
    if len(labels) != len(run_dirs):
        raise FigureError(f"--labels has {len(labels)} labels for {len(run_dirs)} runs: give one label per run")
    columns = []
    for run_dir, label in zip(run_dirs, labels, strict=True):
        cfg, weights = _config_and_weights(run_dir)
        columns.append(Column(label, run_dir, cfg, weights, *training_record(run_dir, cfg)))
    first = columns[0]
    for column in columns[1:]:
        if data_identity(column.cfg) != data_identity(first.cfg):
            raise FigureError(f"{first.run_dir} ({data_identity(first.cfg)}) and {column.run_dir} "
                              f"({data_identity(column.cfg)}) use different data sets: compare runs of one data set")
    return columns


def snapshot_columns(run_dirs: list[Path], labels: list[str] | None) -> list[Column]:
    """Figure 1: one column per weight snapshot of one run, in epoch order."""
    if len(run_dirs) != 1:
        raise FigureError(f"--snapshots takes one run directory, got {len(run_dirs)}: pass the run with snapshots")
    cfg, _ = _config_and_weights(run_dirs[0])
    snapshots = dict(sorted(list_snapshots(run_dirs[0]).items()))
    if not snapshots:
        raise FigureError(f"{run_dirs[0]} has no weight snapshots: train with trainer.snapshot_epochs=[...]")
    labels = labels or [f"epoch {epoch}" for epoch in snapshots]
    if len(labels) != len(snapshots):
        raise FigureError(f"--labels has {len(labels)} labels for {len(snapshots)} snapshots: give one per snapshot")
    trained_on = training_record(run_dirs[0], cfg)[1]
    return [Column(label, run_dirs[0], cfg, load_weights(path), f"{epoch} (snapshot)", trained_on)
            for label, (epoch, path) in zip(labels, snapshots.items(), strict=True)]


def select_images(labels: Tensor, indices: list[int] | None, count: int, split_name: str) -> list[int]:
    """The given indices (checked), or the first ``count`` images of distinct classes in split order."""
    size = len(labels)
    if indices is not None:
        for index in indices:
            if not 0 <= index < size:
                raise FigureError(f"--images index {index} is out of range: the {split_name} split has {size} "
                                  f"images (use 0..{size - 1})")
        return indices
    if count < 1:
        raise FigureError(f"--count {count} must be at least 1")
    first_of_class: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        first_of_class.setdefault(label, index)
    return sorted(first_of_class.values())[:count]


def trained_model(column: Column, num_classes: int, device: torch.device) -> nn.Module:
    """The column's network as it was trained (drop layers included; they are off in eval mode)."""
    if len(column.weights["fc.bias"]) != num_classes:
        raise FigureError(f"{column.run_dir}: its classifier has {len(column.weights['fc.bias'])} classes, the data "
                          f"set {num_classes}: pass the data set it was trained on with --data")
    model = build_model(column.cfg, num_classes, device)
    model.load_state_dict(column.weights)
    return model.eval()


def evaluate(models: list[nn.Module], split: Split, indices: list[int], target: str, device,
             keep_maps: bool) -> list[tuple]:
    """Per model: (spreads, predictions, maps or None) on ``indices``; each batch is loaded once for all models.
    Only the grid keeps its maps: 1,000 ImageNet maps would take 200 MB per model."""
    parts = [([], [], []) for _ in models]
    for start in range(0, len(indices), BATCH):
        images, labels = split.load(indices[start : start + BATCH])
        for model, (spreads, predictions, maps) in zip(models, parts, strict=True):
            cams, predicted = _cams_and_predictions(model, images.to(device), labels.to(device), target)
            spreads.append(cam_spread(cams).cpu())
            predictions.append(predicted.cpu())
            maps.extend([cams.cpu()] if keep_maps else [])
    return [(torch.cat(s), torch.cat(p), torch.cat(m) if keep_maps else None) for s, p, m in parts]


def render_grid(path: Path, split: Split, rows: list[int], columns: list[Column], maps: list[Tensor],
                predictions: list[Tensor], target: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, changes no global backend state

    images, labels = split.load(rows)
    shown = split.display(images)
    figure = Figure(figsize=(1.9 * (len(columns) + 1) + 0.8, 1.9 * len(rows) + 0.3), layout="constrained")
    axes = figure.subplots(len(rows), len(columns) + 1, squeeze=False)
    for row, index in enumerate(rows):
        axes[row, 0].imshow(shown[row].numpy())
        axes[row, 0].set_ylabel(f"#{index} {split.classes[int(labels[row])]}", fontsize=7)
        for col in range(len(columns)):
            axes[row, col + 1].imshow(shown[row].numpy())
            axes[row, col + 1].imshow(maps[col][row].numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            if target == "predicted":
                axes[row, col + 1].set_xlabel(f"pred {split.classes[int(predictions[col][row])]}", fontsize=6)
    for col, title in enumerate(["image", *(column.label for column in columns)]):
        axes[0, col].set_title(title, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap="jet"), ax=axes, shrink=0.5, pad=0.01,
                    label="class activation (each map scaled to [0, 1])")
    figure.text(0.01, 0.002, "; ".join(f"{c.label}: {c.cfg.model.name}, {c.epochs} epochs, seed {c.cfg.seed}, "
                                       f"trained on {c.trained_on}" for c in columns), fontsize=5, color="0.3",
                wrap=True)
    figure.savefig(path, dpi=150)


def command_line(args: argparse.Namespace) -> str:
    words = ["python", "-m", "selectscale.figures", "cam", *map(str, args.run_dirs)]
    words += ["--snapshots"] if args.snapshots else []
    for flag, value in (("--labels", args.labels), ("--images", args.images), ("--count", args.count),
                        ("--target", args.target), ("--data", args.data), ("--out", args.out), ("--name", args.name),
                        ("--device", args.device), ("--spread-images", args.spread_images)):
        words += [] if value is None else [flag, str(value)]
    for note in args.note:
        words += ["--note", note]
    return shlex.join(words)


def drop_description(drop: DictConfig) -> str:
    rates = [f"{key} {drop.get(key)}" for key in ("top_rate", "retain_rate") if drop.get(key) is not None]
    return drop.name + (f" ({', '.join(rates)})" if rates else "")


def write_markdown(path: Path, args, split: Split, bundle: DatasetBundle, columns: list[Column], rows: list[int],
                   spread: list[tuple], spread_labels: Tensor) -> None:
    """The provenance and the numbers: every value below is computed from the runs and the data."""
    figure = "Figure 1: one run during training" if args.snapshots else "Figure 5: runs side by side"
    rule = (f"given with --images: {rows}" if args.images else
            f"the first {len(rows)} images of distinct classes in {split.name}-split order (--count {args.count}): "
            f"{rows}")
    target = "the class each network predicts" if args.target == "predicted" else "the true class"
    lines = [f"# Class activation maps ({figure})", "", f"- Command: `{command_line(args)}`",
             f"- Data shown: {bundle.name}, {split.name} split; verified {bundle.verified}; "
             f"{len(bundle.train)} training / {len(bundle.test)} test images.",
             f"- Images (rows): {rule}.", f"- Maps for {target}; Zhou et al. 2016, M_c(x, y) = sum_k w_k^c f_k(x, y), "
             "bilinearly upsampled and min-max normalised per image; overlay: jet colour map at alpha 0.5.",
             f"- CAM spread: the fraction of pixels with normalised CAM >= {SPREAD_THRESHOLD} (our measure, not the "
             f"paper's), mean ± std over {len(spread_labels)} evenly spaced {split.name} images; error: the share "
             "of those images misclassified.", *[f"- {note}" for note in args.note], ""]
    header = ("column", "run", "model", "drop", "epochs trained", "trained on (verified, train/test)", "CAM spread",
              "error (%)")
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for column, (spreads, predictions, _) in zip(columns, spread, strict=True):
        std = float(spreads.std()) if len(spreads) > 1 else 0.0
        error = 100 * float((predictions != spread_labels).float().mean())
        cells = (column.label, f"`{column.run_dir}`", column.cfg.model.name, drop_description(column.cfg.drop),
                 column.epochs, column.trained_on, f"{float(spreads.mean()):.3f} ± {std:.3f}", f"{error:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def parse_list(text: str | None, flag: str, kind=str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(item.strip()) for item in text.split(",")]
    except ValueError:
        raise FigureError(f"{flag} {text!r} is not a comma-separated list of {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", type=Path, nargs="+", help="finished runs (with --snapshots: one run)")
    parser.add_argument("--snapshots", action="store_true", help="columns = the run's weight snapshots (Figure 1)")
    parser.add_argument("--labels", default=None, help="column titles, comma-separated (default: run names)")
    parser.add_argument("--images", default=None, help="image indices, e.g. 3,17,42 (default: distinct classes)")
    parser.add_argument("--count", type=int, default=6, help="images of distinct classes when --images is absent")
    parser.add_argument("--target", choices=("true", "predicted"), default="true", help="the class each map is for")
    parser.add_argument("--data", default=None, help="dataset.root, if it moved since training")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--name", default="cam", help="file stem of the PNG and the Markdown")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--spread-images", type=int, default=1000, help="images the CAM spread averages over")
    parser.add_argument("--note", action="append", default=[], help="a provenance line for the Markdown (repeatable)")


def run(args: argparse.Namespace) -> list[Path]:
    labels, indices = parse_list(args.labels, "--labels"), parse_list(args.images, "--images", int)
    if args.spread_images < 1:
        raise FigureError(f"--spread-images {args.spread_images} must be at least 1")
    columns = (snapshot_columns if args.snapshots else run_columns)(args.run_dirs, labels)
    split, bundle = open_split(columns[0].cfg, args.data, training=args.snapshots)
    rows = select_images(split.labels, indices, args.count, split.name)
    device = torch.device(args.device)
    models = [trained_model(column, bundle.num_classes, device) for column in columns]
    count = min(args.spread_images, len(split.labels))
    spread_indices = [position * len(split.labels) // count for position in range(count)]  # evenly spaced
    grid = evaluate(models, split, rows, args.target, device, keep_maps=True)
    spread = evaluate(models, split, spread_indices, args.target, device, keep_maps=False)
    args.out.mkdir(parents=True, exist_ok=True)
    png, markdown = args.out / f"{args.name}.png", args.out / f"{args.name}.md"
    render_grid(png, split, rows, columns, [maps for _, _, maps in grid], [p for _, p, _ in grid], args.target)
    write_markdown(markdown, args, split, bundle, columns, rows, spread, split.labels[spread_indices])
    return [markdown, png]


def _config_and_weights(run_dir: Path) -> tuple:
    """(config, weights) of a trained run (:func:`selectscale.runs.load_run`, with its belongs-to checks)."""
    run = load_run(run_dir)
    return run.config, run.weights
