"""The one interface the engine calls for every logger, and the registry that names them.

A logger is where a run's curves go besides ``metrics.jsonl`` (the run directory's own record, written by
selectscale.runs whatever the loggers are). The engine (rank 0 only) calls, in this order::

    logger = LoggerClass(start, **options)     # options: the keys of configs/logger/NAME.yaml's NAME node
    logger.log_scalars(epoch, {...}, "epoch")  # after every epoch: the plotted fields of metrics.jsonl
    logger.log_scalars(step, {...}, "step")    # every logger.log_every_n_steps optimizer steps (0: never)
    logger.log_hparams(hparams, metrics)       # once, at the end: the run's settings and final errors
    logger.close()                             # always, also after an exception

Scalars arrive under their metrics.jsonl names (``train_loss``, ``lr``, ...); :data:`TAGS` gives the display names
that TensorBoard, W&B and MLflow show. A new logger is one module in this package with a class decorated by
:func:`register_logger` plus ``configs/logger/NAME.yaml`` (docs/architecture.md, "Adding a logger").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# The axes a scalar is logged against: the epoch (1-based, as metrics.jsonl) or the optimizer step (0-based: step
# s is the (s+1)-th update, its lr and drop strength those schedule.py gives at that step).
AXES = ("epoch", "step")

# Display name of every plotted scalar, per axis. The epoch tags are the TensorBoard tags every run has had.
TAGS: dict[str, dict[str, str]] = {
    "epoch": {
        "lr": "train/lr",
        "drop_strength": "train/drop_strength",
        "train_loss": "train/loss",
        "train_top1_error": "train/top1_error",
        "test_loss": "test/loss",
        "test_top1_error": "test/top1_error",
        "test_top5_error": "test/top5_error",
        "images_per_second": "speed/images_per_second",
    },
    "step": {  # rank 0's loss of that step's batch (no cross-rank reduction: that would cost a collective)
        "train_loss": "train_step/loss",
        "lr": "train_step/lr",
        "drop_strength": "train_step/drop_strength",
    },
}


@dataclass(frozen=True)
class LogStart:
    """Where and from where a logger logs: the run directory, its name, and the first epoch (1-based) and optimizer
    step (0-based) this process will log; on a resume, points at or after them from the interrupted process are
    stale (the checkpoint predates them): a logger may hide or drop them (TensorBoard's purge_step, the CSV rows)."""

    run_dir: Path
    first_epoch: int = 1
    first_step: int = 0

    @property
    def run_name(self) -> str:
        return self.run_dir.resolve().name

    def first(self, axis: str) -> int:
        """The first point this process logs on ``axis`` (``epoch`` or ``step``)."""
        return self.first_epoch if axis == "epoch" else self.first_step


class Logger:
    """Base class: a logger overrides :meth:`log_scalars` and, where it has somewhere to put them, :meth:`log_hparams`
    and :meth:`close`. Its options are its ``__init__``'s keyword-only arguments (validated against the YAML)."""

    name: ClassVar[str] = ""
    requires: ClassVar[str | None] = None  # a module beyond selectscale's dependencies (checked before a run starts)
    extra: ClassVar[str | None] = None  # the pip extra that installs it: pip install 'selectscale[EXTRA]'

    def __init__(self, start: LogStart) -> None:
        self.start = start

    def log_scalars(self, step: int, scalars: Mapping[str, float], axis: str = "epoch") -> None:
        raise NotImplementedError

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """``hparams``: dotted config keys -> values (lists, None included); ``metrics``: ``hparam/...`` -> float."""

    def close(self) -> None:
        """Flush and release; called once, also after an exception."""


# name -> class; filled as the modules of selectscale.loggers are imported (selectscale.loggers imports them all)
LOGGERS: dict[str, type[Logger]] = {}


def register_logger(name: str, *, requires: str | None = None, extra: str | None = None
                    ) -> Callable[[type[Logger]], type[Logger]]:
    """Class decorator: make the class the logger ``name`` (``logger=NAME`` with configs/logger/NAME.yaml)."""

    def register(cls: type[Logger]) -> type[Logger]:
        if name in LOGGERS and LOGGERS[name] is not cls:
            raise ValueError(f"logger {name!r} is registered twice: {LOGGERS[name].__module__}, {cls.__module__}")
        cls.name, cls.requires, cls.extra = name, requires, extra
        LOGGERS[name] = cls
        return cls

    return register


def logger_options(cls: type[Logger]) -> dict[str, Any]:
    """The options a logger takes (its ``__init__``'s keyword-only arguments) and their defaults."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def shown(value: Any) -> bool | int | float | str:
    """A config value as a logger's hyperparameter: numbers, strings and booleans as they are, the rest as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)
