"""The configured network: ``build_model(cfg, num_classes, device)``, used by training, evaluation and the figures
(which must not import the training loop to rebuild a trained network)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from selectscale.drop import drop_factory
from selectscale.models import create_model

from .config import ConfigError, drop_kwargs, model_options


def build_model(cfg: DictConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The configured network with its drop layers, on ``device`` (channels-last if the trainer says so);
    a pretrained weight file that does not fit is a ConfigError."""
    drop_arguments = drop_kwargs(cfg.drop)
    options = model_options(cfg.model)  # only the options set: a builder without the slot never sees the keyword
    try:
        model = create_model(cfg.model.name, num_classes, drop=drop_factory(cfg.drop.name, **drop_arguments), **options)
    except ValueError as error:  # a weight file that does not fit: a config mistake, not a crash
        if "pretrained" not in options:
            raise
        raise ConfigError(f"model.{error}") from error
    model = model.to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
