"""MLflow: a run's config as params, its figures as metrics with their steps, and the experiment
folder's key files as artifacts, in the tracking store a lab already uses (``pip install
'cadence[mlflow]'``).

The MLflow run of an experiment folder is named in ``EXP_DIR/mlflow_run.json``: a resumed run
(``cadence resume``, or ``fit(resume_from=...)`` into the same folder) goes on in the same MLflow
run. The lines a run that died logged after its last checkpoint are logged again by the resumed
run (the same values: resume is exact); each is skipped when the store already holds it, so no
step appears twice.

Metrics are sent in the background (MLflow's asynchronous logging), so a slow store does not
hold the training loop; :meth:`MLflowLogger.finish` and ``close`` wait until every one is in,
and raise what the store refused.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

from cadence.errors import ConfigError
from cadence.loggers.base import MetricLogger
from cadence.registry import LOGGERS
from cadence.runtime.files import dotted_keys, read_json_object, write_json_atomic

RUN_FILE = "mlflow_run.json"
ARTIFACTS = ("config.yaml", "provenance.json", "results.json", "train.log", "status.json", "learning_rates.json")
# MLflow's limits: a param's value is at most 6,000 characters; a batch at most 100 params, 1,000 metrics.
PARAM_LENGTH, PARAMS_A_BATCH, METRICS_A_BATCH = 6000, 100, 1000
STATUS = {"finished": "FINISHED", "stopped": "KILLED", "crashed": "FAILED"}


@LOGGERS.register("mlflow")
class MLflowLogger(MetricLogger):
    """Log to MLflow.

    ``tracking_uri``: the store (``sqlite:///path/mlflow.db``, ``http://host:5000``); None takes
    MLflow's own default (``MLFLOW_TRACKING_URI``). ``experiment_name``: the MLflow experiment
    (created when missing, its artifacts beside a local SQLite store); None: the recipe's
    ``name``. ``run_name``: None gives the experiment folder's name.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None, run_name: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("experiment.loggers: mlflow is not installed; pip install 'cadence[mlflow]'") from None
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id: str | None = None
        self.directory: Path | None = None
        self._already: collections.Counter = collections.Counter()  # (key, step) points the store holds, not yet re-logged
        self._pending: list[Any] = []  # the asynchronous logging operations not waited for yet

    def open(self, directory: Path) -> None:
        self.directory = Path(directory)
        saved = read_json_object(self.directory / RUN_FILE)  # this folder's MLflow run, if it has one in this store
        if saved.get("run_id") and saved.get("tracking_uri") == self.client.tracking_uri:
            self.run_id = saved["run_id"]

    def start(self, config: dict[str, Any] | None, resumed: bool) -> None:
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")  # resumed, or a second fit: the same run
            return
        experiment_id = self._experiment_id(config)
        run = self.client.create_run(experiment_id, run_name=self.run_name or self.directory.name,
                                     tags={"cadence.experiment_dir": str(self.directory)})
        self.run_id = run.info.run_id
        write_json_atomic(self.directory / RUN_FILE, {"tracking_uri": self.client.tracking_uri, "run_id": self.run_id,
                                                      "experiment_id": experiment_id})
        if config is not None:
            from mlflow.entities import Param

            params = [Param(key, value) for key, value in as_params(config).items()]
            for first in range(0, len(params), PARAMS_A_BATCH):
                self.client.log_batch(self.run_id, params=params[first:first + PARAMS_A_BATCH])

    def _experiment_id(self, config: dict[str, Any] | None) -> str:
        name = self.experiment_name or (config or {}).get("name") or "cadence"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.client.tracking_uri.startswith("sqlite:///"):  # a local store: its artifacts beside it, not in the cwd
            location = (Path(self.client.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts" / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def rewind(self, global_step: int) -> None:
        """Count the points the store holds after the checkpoint's step: the resumed run logs
        each again, and :meth:`log_metrics` skips it."""
        if self.run_id is None:
            return
        self._already.clear()
        for key in self.client.get_run(self.run_id).data.metrics:
            self._already.update((key, point.step) for point in self.client.get_metric_history(self.run_id, key)
                                 if point.step >= global_step)

    def log_metrics(self, values: dict[str, float], step: int, epoch: int, split: str) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = []
        for key, value in values.items():
            if self._already[(key, step)] > 0:
                self._already[(key, step)] -= 1  # the stopped run logged this point already
                continue
            metrics.append(Metric(key, float(value), stamp, step))
        for first in range(0, len(metrics), METRICS_A_BATCH):
            self._pending.append(self.client.log_batch(self.run_id, metrics=metrics[first:first + METRICS_A_BATCH],
                                                       synchronous=False))

    def wait(self) -> None:
        """Until every metric sent is in the store (raising what it refused)."""
        pending, self._pending = self._pending, []
        for operation in pending:
            operation.wait()

    def finish(self, status: str) -> None:
        if self.run_id is None:
            return
        self.wait()
        for name in ARTIFACTS:
            if (self.directory / name).is_file():
                self.client.log_artifact(self.run_id, str(self.directory / name))
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

    def close(self) -> None:
        self.wait()


def as_params(config: dict[str, Any]) -> dict[str, str]:
    """A nested config as MLflow params: ``{"optimizer.lr": "0.002"}``, other values as JSON, long ones cut.

    >>> as_params({"optimizer": {"name": "adamw", "lr": 2e-3}, "metrics": ["wer", "cer"]})
    {'optimizer.name': 'adamw', 'optimizer.lr': '0.002', 'metrics': '["wer", "cer"]'}
    """
    return {key: (value if isinstance(value, str) else json.dumps(value, default=str))[:PARAM_LENGTH]
            for key, value in dotted_keys(config).items()}
