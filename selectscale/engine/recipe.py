"""The recipe switches the trainer holds across epochs (issue 36): the weight EMA, the batch mixer and the best
checkpoint by validation error, built from the config once, saved in and restored from the run's checkpoint.

Everything here is off by default; when off it adds nothing to the checkpoint, the epoch record or result.json, and
draws no random number, so the paper's recipe computes exactly what it computed before the switches existed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from selectscale.errors import ForeignRunError
from selectscale.runs.checkpoint import save_best

from .ema import EMA_RESULT_KEYS, build_ema
from .mixing import build_mixer

log = logging.getLogger("selectscale")


class BestValidation:
    """``trainer.keep_best``: after each evaluated epoch whose VALIDATION top-1 error is strictly lower than every
    earlier one, ``checkpoint.best.pt`` gets the raw model's weights (and the EMA's, when on), the epoch and the
    error (runs.checkpoint.save_best). The raw model's error chooses. Only with a validation split (the config
    refuses keep_best without one): the test split never chooses anything."""

    def __init__(self, enabled: bool, run_dir: Path, is_main: bool) -> None:
        self.enabled, self.run_dir, self.is_main = enabled, run_dir, is_main
        self.error: float | None = None
        self.epoch: int | None = None

    def consider(self, record: dict, epoch: int, weights: dict) -> bool:
        """Keep ``weights`` if ``record`` (an epoch's) has the lowest validation error so far; True if kept."""
        error = record.get("test_top1_error")
        if not self.enabled or error is None or (self.error is not None and error >= self.error):
            return False
        self.error, self.epoch = error, epoch
        if self.is_main:
            save_best(dict(weights, epoch=epoch, validation_top1_error=error), self.run_dir)
        return True

    def state(self) -> dict:
        return dict(error=self.error, epoch=self.epoch)

    def load(self, state: dict) -> None:
        self.error, self.epoch = state["error"], state["epoch"]


class RecipeSwitches:
    """The trainer's EMA (``ema``), mixer (``mixer``) and best checkpoint (``best``), each None or off."""

    def __init__(self, cfg, model: nn.Module, num_classes: int, evaluated_on: str, run_dir: Path,
                 is_main: bool) -> None:
        self.ema = build_ema(cfg.trainer, model)
        self.mixer = build_mixer(cfg.trainer, num_classes)
        keep_best = bool(cfg.trainer.get("keep_best", False))
        self.best = BestValidation(keep_best and evaluated_on == "validation", run_dir, is_main)
        self.config = OmegaConf.to_yaml(cfg, resolve=True) if keep_best else None

    def checkpoint_state(self) -> dict:
        """What a resumable checkpoint carries for the switches that are on (nothing for those that are off)."""
        state = {}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.best.enabled:
            state["best"] = self.best.state()
        return state

    def load(self, state: dict, run_dir: Path) -> None:
        """Restore from a checkpoint's ``state``; ForeignRunError (one line) if a switch that is on finds nothing."""
        for key, on in (("ema", self.ema is not None), ("best", self.best.enabled)):
            if on and key not in state:
                raise ForeignRunError(f"the checkpoint in {run_dir} has no {key} state although this run keeps one: "
                                      "it was written with other settings; start a new run directory")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.best.enabled:
            self.best.load(state["best"])

    def evaluate(self, record: dict, loader, device, autocast_type: str | None) -> None:
        """Add the EMA's evaluation (``test_top1_error_ema`` ...) to an evaluated epoch's ``record``."""
        if self.ema is not None:
            record.update(self.ema.evaluate(loader, device, autocast_type))

    def after_epoch(self, record: dict, epoch: int, model: nn.Module) -> None:
        """The best checkpoint, once the epoch's record (with its validation error) is logged."""
        if self.best.enabled and record.get("test_top1_error") is not None:
            weights = dict(model=model.state_dict(), config=self.config)
            if self.ema is not None:
                weights["ema"] = self.ema.state_dict()
            if self.best.consider(record, epoch, weights):
                log.info("best validation top-1 error so far (%.4f) at epoch %d: kept in the best checkpoint",
                         record["test_top1_error"], epoch)

    def result_fields(self, record: dict) -> dict:
        """result.json's fields of the switches that are on: the EMA's errors, the best epoch and its error."""
        fields = {key: record.get(key) for key in EMA_RESULT_KEYS} if self.ema is not None else {}
        if self.best.enabled:
            fields.update(best_validation_epoch=self.best.epoch, best_validation_top1_error=self.best.error)
        return fields
