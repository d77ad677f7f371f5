"""Loggers as a Hydra config group (``logger=tensorboard|csv|wandb|mlflow|none|many`` or ``logger=[a,b]``).

    base.py         the interface the engine calls (Logger: log_scalars, log_hparams, close), LogStart, TAGS,
                    LOGGERS and register_logger (the single source of logger names)
    tensorboard.py  RUN_DIR/tensorboard/ event files (the default; tags as every run has had)
    csv.py          RUN_DIR/csv/metrics.csv (epochs) and steps.csv (per-step scalars)
    wandb.py        a W&B run in RUN_DIR/wandb/, offline unless asked (pip install 'selectscale[wandb]')
    mlflow.py       an MLflow run in the local store RUN_DIR/mlflow/ (pip install 'selectscale[mlflow]')

Every module of this package is imported here, so that its @register_logger runs: a new logger is one module plus
configs/logger/NAME.yaml, and no other file changes. The modules import their third-party package only when a
logger is built. Layer: below the engine (which builds them); they import neither the engine nor the report.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Mapping
from typing import Any

from .base import AXES, LOGGERS, TAGS, Logger, LogStart, logger_options, register_logger

__all__ = ["AXES", "LOGGERS", "SETTINGS", "TAGS", "LogStart", "Logger", "build_loggers", "chosen_loggers",
           "logger_options", "logger_problem", "missing_package", "register_logger"]

# The keys of the config's ``logger`` node that are settings, not logger names (configs/train.yaml's schema).
SETTINGS = ("log_every_n_steps",)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def chosen_loggers(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The loggers a ``logger`` node (a plain dict) chooses, in order: name -> options (None: no options)."""
    return {name: dict(options or {}) for name, options in config.items() if name not in SETTINGS}


def missing_package(name: str) -> str | None:
    """For a logger whose package is not installed: the one line that says how to install it; else None."""
    cls = LOGGERS[name]
    if cls.requires is None or importlib.util.find_spec(cls.requires) is not None:
        return None
    return (f"logger={name} needs the {cls.requires} package, which is not installed: "
            f"pip install 'selectscale[{cls.extra or cls.requires}]' (or choose another logger, e.g. logger=csv)")


def logger_problem(config: Mapping[str, Any]) -> str | None:
    """One line for the first thing wrong with a ``logger`` node (a plain dict), or None: an unknown logger name,
    an option the logger does not take, a bad ``log_every_n_steps``, a package that is not installed."""
    every = config.get("log_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        return (f"logger.log_every_n_steps={every!r} is invalid: it must be an integer >= 0 (0 or null: epoch "
                "records only)")
    for name, options in chosen_loggers(config).items():
        if name not in LOGGERS:
            return (f"logger.{name} is invalid: no such logger; use one of {', '.join(sorted(LOGGERS))} "
                    "(logger=NAME or logger=[NAME,NAME]), or none")
        takes = logger_options(LOGGERS[name])
        for key in options:
            if key not in takes:
                return (f"logger.{name}.{key}={options[key]!r} is invalid: the {name} logger takes "
                        f"{', '.join(takes) or 'no options'}")
        if (problem := missing_package(name)) is not None:
            return problem
    return None


def build_loggers(config: Mapping[str, Any], start: LogStart) -> list[Logger]:
    """The loggers a ``logger`` node chooses, opened (each closed again if a later one fails to open)."""
    built: list[Logger] = []
    try:
        for name, options in chosen_loggers(config).items():
            built.append(LOGGERS[name](start, **options))
    except BaseException:
        for logger in built:
            logger.close()
        raise
    return built
