"""``load_run(path)``: a finished run's config, weights, result and the means to rebuild its network and data, for
every consumer (evaluate, the figures, the CAMs), with the checks that the checkpoint belongs to the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selectscale.errors import ForeignRunError, RunDirError

from .checkpoint import load_checkpoint
from .directory import differing_settings, load_saved_config
from .history import complete_config
from .layout import CONFIG_FILE, check_entries
from .result import read_result


@dataclass
class LoadedRun:
    """One trained run: its config (keys added since filled in), its newest verified weights, its result.json."""

    run_dir: Path
    config: DictConfig
    weights: dict
    result: dict | None

    def build_model(self, device, config: DictConfig | None = None):
        """The run's network with its weights on ``device`` (``config``: the run's, with runtime changes such as
        channels-last); ForeignRunError when the weights do not fit it."""
        from selectscale.engine.model_setup import build_model  # the one builder (training builds with it too)

        config = config if config is not None else self.config
        model = build_model(config, self.num_classes(config), device)
        try:
            model.load_state_dict(self.weights, strict=True)
        except (RuntimeError, KeyError, ValueError) as error:
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise ForeignRunError(f"the checkpoint in {self.run_dir} does not fit the network its config.yaml "
                                  f"describes ({first}): it belongs to another run; evaluate the run it came "
                                  "from") from error
        return model

    def num_classes(self, config: DictConfig | None = None) -> int:
        """The number of classes the run was trained on: as its result.json records it, else its config's, else
        its classifier's (``fc.bias``)."""
        data = self.result.get("dataset", {}) if isinstance(self.result, dict) else {}
        if isinstance(data, dict) and isinstance(data.get("num_classes"), int):
            return data["num_classes"]
        config = config if config is not None else self.config
        if config.dataset.num_classes is not None:
            return int(config.dataset.num_classes)
        bias = self.weights.get("fc.bias")
        if bias is not None and getattr(bias, "ndim", 0) == 1:
            return int(bias.shape[0])
        return {"cifar100": 100, "imagenet": 1000}.get(config.dataset.name, 10)


def load_run(run_dir: Path) -> LoadedRun:
    """The trained run in ``run_dir``; RunDirError when it holds no usable config.yaml or checkpoint, and
    ForeignRunError when its checkpoint was written by another setting (model, drop method, classes, data)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a run directory (no such folder): give the folder a run trained in")
    check_entries(run_dir)
    saved = load_saved_config(run_dir / CONFIG_FILE)
    state = load_checkpoint(run_dir)
    if saved is None or state is None:
        raise RunDirError(f"{run_dir} holds no {'config.yaml' if saved is None else 'valid checkpoint'}: train a run "
                          "there first (or give the folder of a finished run)")
    if not isinstance(state.get("model"), dict):
        raise ForeignRunError(f"the checkpoint in {run_dir} holds no model weights: it was not written by this "
                              "trainer; move it away")
    carried = state.get("config")
    if isinstance(carried, str):
        differences = differing_settings(saved, OmegaConf.create(carried))
        if differences:
            shown = ", ".join(f"{key}={theirs} (config.yaml: {ours})" for key, ours, theirs in differences[:4])
            raise ForeignRunError(f"the checkpoint in {run_dir} belongs to another run: it was trained with {shown}"
                                  f"{' ...' if len(differences) > 4 else ''}; evaluate the run it came from")
    try:
        result = read_result(run_dir)
    except ValueError:
        result = None
    return LoadedRun(run_dir, complete_config(saved), state["model"], result)
