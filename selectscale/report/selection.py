"""Choose each method's rate from a grid of runs on a validation split (issue 22), never from test images.

A selection spec (layout ``selection``, e.g. configs/paper/mini_overfit_selection.yaml) trains every rate of
its grid with ``dataset.validation_fraction`` > 0, so that its runs evaluate on images held out of the
training files. :func:`choose_rates` refuses any run that was evaluated on the test split, then picks per
method (drop name) the grid row with the lowest mean validation top-1 error over its seeds (a tie keeps the
row listed first in the spec). ``selection.md`` shows the grid, every run's validation error and the
choice; ``selection.json`` holds the choice for the study spec and its test.

How much a rate perturbs (:func:`drop_load`): the run's network is built on the meta device (no weights, no
compute) with its drop layers, a forward pass records each drop layer's channel count C, and the count of maps
each one drops at full strength follows from the project's own rules: Selectout drops round((1 - p) C) maps
(``functional._dropped_count``, half up, in float32 as in training), SpatialDropout (1 - p) C in expectation,
Dropout and DropBlock zero (1 - p) C maps' worth of positions in expectation, SelectDropBlock (1 - p) k with
k = round(t C) (``functional.num_top_maps``), with p = 1 - rate_scale (1 - retain_rate); SpatialScale and
SelectScale rescale C and k maps. A dropping method whose mean over its drop layers is below one map is flagged
a *near no-op* (:func:`near_no_op_flag`): in selection.md, in every rendered table's flags and in summary.json.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .collect import RunRow
from .specs import ExperimentError, Table
from .stats import drop_name
from .tables import Group, final_train_mean, format_mean_std
from .titles import table_title

SELECTION_FILES = ("selection.md", "selection.json")
NEAR_NO_OP_MAPS = 1.0  # a dropping method that drops fewer maps than this per drop layer, on average, is flagged
_IMAGE_SIZE = {"imagenet": 224}  # the input side of the shape-only forward pass (CIFAR and synthetic: 32)
# What each method does to the maps of a drop layer: the verb of its count, and whether it drops (zeroes) at all.
_VERBS = {"dropout": "zeroes", "spatial_dropout": "drops", "selectout": "drops", "dropblock": "zeroes",
          "select_dropblock": "zeroes", "spatial_scale": "rescales", "selectscale": "rescales"}
_UNITS = {"drops": "maps", "zeroes": "maps' worth of positions", "rescales": "maps"}


@dataclass(frozen=True)
class DropLoad:
    """What a drop setting does at full strength in its network: ``verb`` (drops whole maps, zeroes positions,
    or rescales maps) and ``(channels, maps)`` for every drop layer, in the order of the forward pass."""

    verb: str
    layers: tuple[tuple[int, float], ...]

    @property
    def mean(self) -> float:
        """Maps (or maps' worth of positions) per drop layer, averaged over the layers."""
        return sum(maps for _, maps in self.layers) / len(self.layers)

    @property
    def near_no_op(self) -> bool:
        """A dropping method that drops fewer than one map per drop layer on average."""
        return self.verb != "rescales" and self.mean < NEAR_NO_OP_MAPS

    def by_channels(self) -> dict[int, float]:
        """The mean count per channel count C (ascending C)."""
        found: dict[int, list[float]] = {}
        for channels, maps in self.layers:
            found.setdefault(channels, []).append(maps)
        return {channels: sum(values) / len(values) for channels, values in sorted(found.items())}


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_load(load: DropLoad | None) -> str:
    """``drops 0.33 maps a layer: 0/0/1 at C = 16/32/64 (18 layers); near no-op`` (``—`` without a load)."""
    if load is None:
        return "—"
    per = load.by_channels()
    text = (f"{load.verb} {_number(load.mean)} {_UNITS[load.verb]} a layer: "
            f"{'/'.join(_number(maps) for maps in per.values())} at C = {'/'.join(map(str, per))} "
            f"({len(load.layers)} layers)")
    return text + ("; near no-op" if load.near_no_op else "")


def near_no_op_flag(entry: Group) -> str | None:
    """``near no-op: drops 0.33 maps a drop layer on average (< 1)`` for a group whose runs' setting drops fewer
    than one map per drop layer on average at full strength; else None."""
    load = None if entry.mixed_settings or not entry.rows else drop_load(entry.rows[0])
    if load is None or not load.near_no_op:
        return None
    return (f"near no-op: {load.verb} {_number(load.mean)} {_UNITS[load.verb]} a drop layer on average "
            f"(< {_number(NEAR_NO_OP_MAPS)})")


def drop_load(row: RunRow) -> DropLoad | None:
    """What ``row``'s drop setting does per drop layer of its network at full strength; None for no drop, a
    method not listed in ``_VERBS``, a network the registry cannot build or one without drop layers."""
    setting = row.setting_dict()
    drop = {key[len("drop."):]: value for key, value in setting.items() if key.startswith("drop.")}
    model = {key[len("model."):]: value for key, value in setting.items() if key.startswith("model.")}
    drop.setdefault("name", row.drop)
    model.setdefault("name", row.model)
    if drop["name"] not in _VERBS:
        return None
    image_size = _IMAGE_SIZE.get(str(setting.get("dataset.name", row.dataset)), 32)
    try:
        load = _load(tuple(sorted(drop.items())), tuple(sorted(model.items())), image_size)
    except (KeyError, TypeError, ValueError, RuntimeError):  # a model or setting the registry cannot build
        return None
    return load if load.layers else None  # a network without drop layers: nothing to count


@functools.lru_cache(maxsize=128)
def _load(drop_items: tuple, model_items: tuple, image_size: int) -> DropLoad:
    import torch
    from omegaconf import OmegaConf

    from selectscale.drop import Selective, drop_factory, functional
    from selectscale.drop.layers import DropLayer
    from selectscale.engine.config import drop_kwargs, model_options
    from selectscale.models import create_model

    drop, model_config = OmegaConf.create(dict(drop_items)), OmegaConf.create(dict(model_items))
    options = {key: value for key, value in model_options(model_config).items() if key != "pretrained"}
    with torch.device("meta"):
        network = create_model(model_config.name, 10, drop=drop_factory(drop.name, **drop_kwargs(drop)), **options)
    wrapped = {id(module.base) for module in network.modules() if isinstance(module, Selective)}
    layers = [module for module in network.modules()
              if isinstance(module, Selective) or (isinstance(module, DropLayer) and id(module) not in wrapped)]
    seen: list[tuple[torch.nn.Module, int]] = []
    hooks = [layer.register_forward_pre_hook(lambda module, args: seen.append((module, args[0].shape[1])))
             for layer in layers]
    network.eval()
    with torch.no_grad():
        network(torch.zeros(1, 3, image_size, image_size, device="meta"))
    for hook in hooks:
        hook.remove()
    counts = tuple((channels, _maps(module, channels, drop.name, functional)) for module, channels in seen)
    return DropLoad(_VERBS[drop.name], counts)


def _maps(layer, channels: int, method: str, functional) -> float:
    """The maps one drop layer with ``channels`` maps drops (or zeroes the worth of, or rescales) at full strength."""
    import torch

    base = getattr(layer, "base", layer)  # a selecting wrapper's drop layer holds the rates
    drop_amount = base.rate_scale * (1.0 - base.retain_rate)
    if method in ("spatial_scale", "selectscale") and drop_amount == 0.0:
        return 0.0  # u ~ Uniform(1, 1): the identity
    top = functional.num_top_maps(layer.top_rate, channels, layer.rounding) if hasattr(layer, "top_rate") else None
    if method == "selectout":
        retain = 1.0 - drop_amount * torch.ones((), dtype=torch.float32)  # DropLayer.effective_retain_rate at 1
        return float(functional._dropped_count(retain, channels, layer.rounding))
    if method == "selectscale":
        return float(top)
    if method == "spatial_scale":
        return float(channels)
    return drop_amount * (top if top is not None else channels)  # expected: (1 - p) C, or (1 - p) k


def _check_validation_only(groups: Sequence[Group]) -> None:
    tested = [str(row.path) for entry in groups for row in entry.rows if row.evaluated_on != "validation"]
    if tested:
        raise ExperimentError(f"{len(tested)} run(s) of the selection grid were evaluated on the test split, e.g. "
                              f"{tested[0]}: a rate is chosen on a validation split only (dataset."
                              "validation_fraction > 0); move them out of the grid's folder")
    mixed = [entry.key[0] for entry in groups if entry.mixed_settings or entry.top1_mean is None]
    if mixed:
        raise ExperimentError(f"grid rows {', '.join(mixed)} have runs of different settings; the choice needs "
                              "one setting per row")


def choose_rates(groups: Sequence[Group]) -> dict[str, Group]:
    """``{drop name: the group with the lowest mean validation error}``, groups in spec order (ties: first);
    a no-drop row is the reference, never a candidate."""
    _check_validation_only(groups)
    chosen: dict[str, Group] = {}
    for entry in groups:
        method = drop_name(entry)
        if method == "none":
            continue  # the reference row: no rate to choose
        if method not in chosen or entry.top1_mean < chosen[method].top1_mean:
            chosen[method] = entry
    return chosen


def _rates(entry: Group) -> str:
    row = entry.rows[0]
    parts = [f"top_rate {row.top_rate}"] if row.top_rate is not None else []
    parts += [f"retain_rate {row.retain_rate}"] if row.retain_rate is not None else []
    return ", ".join(parts) or "—"


def _seed_errors(entry: Group) -> str:
    return ", ".join(f"{100 * row.test_top1_error:.2f} (seed {row.seed})"
                     for row in sorted(entry.rows, key=lambda row: row.seed))


def _final_train(entry: Group) -> str:
    mean = final_train_mean(entry)
    return "—" if mean is None else f"{mean:.2f}"


def _chosen_cell(entry: Group, winners: set[int]) -> str:
    if drop_name(entry) == "none":
        return "reference"
    return "**yes**" if id(entry) in winners else ""


def render_selection(table: Table, groups: Sequence[Group], chosen: dict[str, Group], command: str,
                     skipped: Sequence[tuple[Path, str]]) -> str:
    """selection.md: provenance, one line per grid row (every seed's validation error) and the choice."""
    winners = {id(entry) for entry in chosen.values()}
    sizes = sorted({row.train_size for entry in groups for row in entry.rows})
    lines = [f"## {table_title(table.title, groups)}", "",
             f"- Rendered by `{command}` from the result.json files (each run: train.py with the overrides in "
             f"configs/paper/{table.name}.yaml).",
             "- Every run below was evaluated on its validation split (result.json `dataset.evaluated_on`), "
             "images held out of the training files; the test images were not loaded. The choice reads only "
             "these validation errors (selectscale/report/selection.py).",
             f"- Training images per run: {', '.join(f'{size:,}' for size in sizes)}; hardware: "
             f"{', '.join(sorted({row.device for entry in groups for row in entry.rows}))}.", "",
             "| grid row | drop | rates | validation top-1 (%) per seed | mean ± std (n) | final train error (%) "
             "| maps per drop layer at full strength | chosen |", "|---|---|---|---|---|---|---|---|"]
    for entry in groups:
        lines.append(f"| {entry.key[0]} | {drop_name(entry)} | {_rates(entry)} | {_seed_errors(entry)} | "
                     f"{format_mean_std(entry.top1_mean, entry.top1_std, entry.n)} | {_final_train(entry)} | "
                     f"{format_load(drop_load(entry.rows[0]))} | {_chosen_cell(entry, winners)} |")
    lines += ["", "Maps per drop layer: how many maps the rate drops (Selectout: round((1 - p) C), half up; "
              "SpatialDropout: (1 - p) C expected), zeroes the worth of (Dropout, DropBlock, SelectDropBlock: "
              "expected) or rescales (SpatialScale: C; SelectScale: k = round(t C)) in each drop layer of the "
              "network, at C = its channel counts (selectscale/report/selection.py). A dropping rate below one map "
              "a layer on average is a **near no-op**.", ""]
    lines += ["Choice (lowest mean validation error per method):", ""]
    lines += [f"- {method}: `{entry.key[0]}` ({_rates(entry)}), "
              f"{format_mean_std(entry.top1_mean, entry.top1_std, entry.n)}"
              + (f"; **{flag}**" if (flag := near_no_op_flag(entry)) else "") for method, entry in chosen.items()]
    if skipped:
        lines += ["", "Left out: " + "; ".join(f"{path}: {reason}" for path, reason in skipped)]
    return "\n".join(lines) + "\n"


def selection_payload(table: Table, chosen: dict[str, Group], command: str) -> dict:
    """selection.json: per method the chosen row, its rates and mean validation error (percent)."""
    return {"spec": f"configs/paper/{table.name}.yaml", "command": command, "units": "percent (validation top-1)",
            "chosen": {method: {"row": entry.key[0], "top_rate": entry.rows[0].top_rate,
                                "retain_rate": entry.rows[0].retain_rate, "n": entry.n,
                                "validation_top1_error_mean": round(entry.top1_mean, 4)}
                       for method, entry in chosen.items()}}


def write_selection(table: Table, groups: Sequence[Group], folder: Path, command: str,
                    skipped: Sequence[tuple[Path, str]]) -> list[Path]:
    """Write ``folder``/selection.md and selection.json; return their paths."""
    chosen = choose_rates(groups)
    folder.mkdir(parents=True, exist_ok=True)
    markdown, payload = (folder / name for name in SELECTION_FILES)
    markdown.write_text(render_selection(table, groups, chosen, command, skipped))
    payload.write_text(json.dumps(selection_payload(table, chosen, command), indent=2) + "\n")
    return [markdown, payload]
