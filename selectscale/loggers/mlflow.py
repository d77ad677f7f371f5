"""An MLflow run (``logger=mlflow``; pip install 'selectscale[mlflow]', which installs mlflow-skinny).

``tracking_uri: null`` (the default): MLflow's file store in RUN_DIR/mlflow/, inside the run directory and
contacting nobody; read it with ``MlflowClient(tracking_uri=RUN_DIR/mlflow as a file: URI)`` or
``mlflow ui --backend-store-uri RUN_DIR/mlflow`` (MLflow 3 keeps the file store in maintenance mode behind
``MLFLOW_ALLOW_FILE_STORE=true``, which this logger sets for itself when it is unset). Any other URI (a server, a
database) is used as given. The store of a run directory holds that run only: a resumed run goes on in the newest
MLflow run of the experiment there. Metrics are logged with their step (the epoch or the optimizer step).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from selectscale.runs.layout import check_entry

from .base import TAGS, Logger, LogStart, register_logger, shown

FOLDER = "mlflow"
BATCH = 100  # MLflow's limit of parameters in one log_batch call
MAX_PARAM = 500  # characters of a parameter value MLflow stores


@register_logger("mlflow", requires="mlflow", extra="mlflow")
class MLflowLogger(Logger):
    def __init__(self, start: LogStart, *, tracking_uri: str | None = None, experiment: str = "selectscale") -> None:
        super().__init__(start)
        from mlflow.tracking import MlflowClient

        if tracking_uri is None:
            folder = start.run_dir / FOLDER
            check_entry(folder, folder=True)
            folder.mkdir(parents=True, exist_ok=True)
            tracking_uri = folder.resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        newest = self.client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"])
        if tracking_uri.startswith("file:") and newest and newest[0].info.run_name == start.run_name:
            self.run_id = newest[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=start.run_name).info.run_id
        self.status = "KILLED"  # until log_hparams, the last call of a run that ends normally

    def log_scalars(self, step: int, scalars: Mapping[str, float], axis: str = "epoch") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(tag, float(scalars[key]), now, step)
                                                    for key, tag in TAGS[axis].items() if scalars.get(key) is not None])

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric, Param

        params = [Param(key, str(shown(value))[:MAX_PARAM]) for key, value in hparams.items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[first:first + BATCH])
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, 0)
                                                    for key, value in metrics.items() if value is not None])
        self.status = "FINISHED"

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status=self.status)
