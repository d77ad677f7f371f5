"""The training engine: ``fit(cfg)`` and its configuration (schemas, ``validate``)."""

from .config import ConfigError, TrainConfig, register_configs, validate
from .fit import fit

__all__ = ["ConfigError", "TrainConfig", "fit", "register_configs", "validate"]
