"""The values of the recipe switches (issue 36), checked by :func:`selectscale.engine.config.validate`: one
ConfigError line naming the option, its value and the fix."""

from __future__ import annotations

from omegaconf import DictConfig

from selectscale.data.autoaugment import AUTO_AUGMENTS
from selectscale.errors import ConfigError

WARMUP_MODES = ("constant", "linear")


def _fail(key: str, value, fix: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {fix}")


def validate_recipe(cfg: DictConfig) -> None:
    """Every recipe switch's value, and the rules they share with other groups."""
    _validate_ema(cfg.trainer)
    _validate_loss(cfg.trainer)
    schedule = cfg.schedule
    mode = schedule.get("warmup_mode", "constant")
    if mode not in WARMUP_MODES:
        _fail("schedule.warmup_mode", mode, f"use one of {', '.join(WARMUP_MODES)}")
    if mode == "linear" and not schedule.warmup_steps:
        _fail("schedule.warmup_mode", mode, "a linear warm-up needs schedule.warmup_steps > 0 (e.g. 400); "
              "without one leave warmup_mode=constant")
    augment = cfg.dataset.get("auto_augment")
    if augment is not None and augment not in AUTO_AUGMENTS:
        _fail("dataset.auto_augment", augment, f"use null, {' or '.join(AUTO_AUGMENTS)}")
    if augment is not None and cfg.dataset.name == "imagenet":
        _fail("dataset.auto_augment", augment, "it is for the CIFAR-shaped data sets (the device loader); leave it "
              "null for imagenet")
    if cfg.trainer.get("keep_best") and not cfg.dataset.validation_fraction:
        _fail("trainer.keep_best", True, "the best checkpoint is chosen by validation error, never by test error; "
              "hold a validation split out with dataset.validation_fraction (e.g. 0.1), or leave keep_best=false")


def _validate_ema(trainer: DictConfig) -> None:
    decay = trainer.get("ema_decay")
    if decay is not None and not 0.0 < decay < 1.0:
        _fail("trainer.ema_decay", decay, "it is the EMA's decay per update, in (0, 1) (e.g. 0.999), or null for off")
    if trainer.get("ema_every", 1) < 1:
        _fail("trainer.ema_every", trainer.ema_every, "it must be >= 1 (optimizer steps between EMA updates)")
    if decay is None and trainer.get("ema_every", 1) != 1:
        _fail("trainer.ema_every", trainer.ema_every, "no EMA is kept; set trainer.ema_decay (e.g. 0.999) too, "
              "or leave ema_every=1")


def _validate_loss(trainer: DictConfig) -> None:
    clip = trainer.get("grad_clip_norm")
    if clip is not None and not clip > 0:
        _fail("trainer.grad_clip_norm", clip, "it is the largest global gradient norm, > 0 (e.g. 1.0), or null for off")
    smoothing = trainer.get("label_smoothing", 0.0)
    if not 0.0 <= smoothing < 1.0:
        _fail("trainer.label_smoothing", smoothing, "it must be in [0, 1) (e.g. 0.1; 0: off)")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if trainer.get(key, 0.0) < 0:
            _fail(f"trainer.{key}", trainer[key], "it is a Beta(alpha, alpha) parameter, >= 0 (0: off)")
    prob = trainer.get("mix_prob", 1.0)
    if not 0.0 < prob <= 1.0:
        _fail("trainer.mix_prob", prob, "it is the chance a batch is mixed, in (0, 1]")
    if prob != 1.0 and not (trainer.get("mixup_alpha", 0.0) or trainer.get("cutmix_alpha", 0.0)):
        _fail("trainer.mix_prob", prob, "no mixing is on; set trainer.mixup_alpha or trainer.cutmix_alpha > 0 "
              "too, or leave mix_prob=1.0")
