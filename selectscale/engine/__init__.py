"""The training engine: ``fit(cfg)`` and its configuration (schemas, ``validate``).

Imported lazily (PEP 562): ``from selectscale.engine import validate`` does not load the training loop, so the
report and the run-directory code can use the engine's config modules without importing torch's models.
"""

from __future__ import annotations

from selectscale.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "fit", "register_configs", "validate"]


def __getattr__(name: str):
    if name == "fit":
        from .trainer import fit

        return fit
    if name in ("TrainConfig", "register_configs", "validate"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
