"""The values the ``debug=`` group sets (issue 36): ``dataset.overfit_batch`` and ``trainer.profile_steps``, each
refused with one line (ConfigError) where it cannot work; called by :func:`selectscale.engine.config.validate`."""

from __future__ import annotations

from omegaconf import DictConfig

from selectscale.errors import ConfigError

from .profiling import profiled_steps


def validate_debug(cfg: DictConfig) -> None:
    if cfg.dataset.get("overfit_batch", False) and cfg.dataset.name == "imagenet":
        raise ConfigError("dataset.overfit_batch=True is invalid: it repeats one batch of an in-memory data set "
                          "(cifar10, cifar100, synthetic); leave it false for imagenet")
    steps = cfg.trainer.get("profile_steps", 0)
    if steps < 0:
        raise ConfigError(f"trainer.profile_steps={steps!r} is invalid: it must be >= 0 (0: no profiler)")
    per_epoch, epochs = cfg.trainer.max_steps_per_epoch, cfg.trainer.epochs
    if steps and per_epoch is not None and per_epoch * epochs < profiled_steps(steps):
        raise ConfigError(f"trainer.profile_steps={steps} is invalid: the profiler skips 1 step and warms up on 1, "
                          f"so it needs {profiled_steps(steps)} steps and the run has {per_epoch * epochs} "
                          "(trainer.max_steps_per_epoch x trainer.epochs); raise those or lower it")
