"""A Weights & Biases run in RUN_DIR/wandb/ (``logger=wandb``; pip install 'selectscale[wandb]').

``mode: offline`` (the default) writes the run's folder (``wandb/offline-run-*/run-*.wandb``) and contacts
nobody, as ``WANDB_MODE=offline`` would; upload it later with ``wandb sync RUN_DIR/wandb/offline-run-*``.
``mode: online`` logs to the server (``wandb login`` first). Epoch scalars are plotted against ``epoch``, per-step
scalars against ``global_step`` (W&B's define_metric). A resumed run starts a new W&B run in the same folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selectscale.runs.layout import check_entry

from .base import TAGS, Logger, LogStart, register_logger

FOLDER = "wandb"
AXIS_METRIC = {"epoch": "epoch", "step": "global_step"}


@register_logger("wandb", requires="wandb", extra="wandb")
class WandbLogger(Logger):
    def __init__(self, start: LogStart, *, project: str = "selectscale", entity: str | None = None,
                 group: str | None = None, tags: list[str] | tuple[str, ...] = (), mode: str = "offline") -> None:
        super().__init__(start)
        import wandb

        check_entry(start.run_dir / FOLDER, folder=True)
        (start.run_dir / FOLDER).mkdir(parents=True, exist_ok=True)
        # console off: train.log and the terminal keep their own lines; symlink off: no link in the run directory
        settings = wandb.Settings(console="off", symlink=False, silent=True, x_disable_stats=True)
        self.run = wandb.init(dir=str(start.run_dir), project=project, entity=entity, group=group,
                              tags=list(tags), name=start.run_name, mode=mode, settings=settings)
        for axis, metric in AXIS_METRIC.items():
            self.run.define_metric(metric)
            for tag in TAGS[axis].values():
                self.run.define_metric(tag, step_metric=metric)

    def log_scalars(self, step: int, scalars: Mapping[str, float], axis: str = "epoch") -> None:
        values = {tag: scalars[key] for key, tag in TAGS[axis].items() if scalars.get(key) is not None}
        self.run.log({AXIS_METRIC[axis]: step, **values})

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self.run.config.update(dict(hparams), allow_val_change=True)  # W&B keeps lists and null as they are
        self.run.summary.update({key: value for key, value in metrics.items() if value is not None})

    def close(self) -> None:
        self.run.finish()
