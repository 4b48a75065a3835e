"""MLflow tracking for the jobs: runs written through ``MlflowClient`` (optional extra ``dsgd-stream[mlflow]``).

``retrain.mlflow_tracking_uri`` (empty = off) turns it on: every ``dsgd retrain`` is one run
(:mod:`batch.tracking`) and the streaming trainer logs one run per query (:mod:`streaming.monitoring`).
Everything goes through an explicit ``MlflowClient`` and run id, never MLflow's global "active run", so
a retrain and a stream in one process (tests, notebooks) cannot log into each other's run.

MLflow is imported only when a tracking URI is set; without the extra, a set URI fails at start-up
with the install command (:class:`~dsgd.core.config.ConfigError`, exit code 2).

Example
-------
>>> run = Run.start("sqlite:///mlflow.db", "dsgd", name="retrain asof-1", params={"model.rank": 10})
>>> run.log_metrics({"train_rmse": 0.81}); run.end()
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from dsgd.core.config import ConfigError

INSTALL_HINT = "pip install 'dsgd-stream[mlflow]'"
#: MLflow's limit on a parameter value (longer values are cut, with a marker).
MAX_PARAM_CHARS = 6000
#: Tag naming the job of a run (``retrain`` | ``stream``); the stream's runs carry ``dsgd.stream_id`` too.
TAG_JOB, TAG_STREAM_ID = "dsgd.job", "dsgd.stream_id"


def client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; a :class:`ConfigError` naming the install command without MLflow."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError(f"config key retrain.mlflow_tracking_uri is set ({uri!r}) but MLflow is not "
                          f"installed: {INSTALL_HINT}") from exc
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing."""
    exp = mlflow_client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else mlflow_client.create_experiment(name)


def flat_params(prefix: str, section: Any, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{"<prefix>.<key>": str(value)}`` of a config section (dataclass) or a dict."""
    items = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else dict(section)
    return {f"{prefix}.{k}": str(v)[:MAX_PARAM_CHARS] for k, v in sorted(items.items()) if k not in skip}


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` MLflow can log as metrics: numbers and booleans (as 0/1), lists skipped."""
    return {k: float(v) for k, v in values.items() if isinstance(v, bool | int | float)}


class Run:
    """One MLflow run, addressed by its id.

    Parameters
    ----------
    mlflow_client : MlflowClient
    run_id : str
    """

    def __init__(self, mlflow_client: Any, run_id: str) -> None:
        self.client, self.run_id = mlflow_client, run_id

    @classmethod
    def start(cls, uri: str, experiment: str, *, name: str, params: Mapping[str, str] | None = None,
              tags: Mapping[str, str] | None = None) -> Run:
        """A new run named ``name`` in ``experiment`` (created when missing) with ``params`` and ``tags``."""
        c = client(uri)
        run = c.create_run(experiment_id(c, experiment), run_name=name, tags=dict(tags or {}))
        out = cls(c, run.info.run_id)
        out.log_params(params or {})
        return out

    @classmethod
    def resume_or_start(cls, uri: str, experiment: str, *, tag: str, value: str, name: str,
                        params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> Run:
        """The run whose tag ``tag`` is ``value`` (set RUNNING again), else a new one: one run per key,
        e.g. per streaming query id, across restarts of the process."""
        c = client(uri)
        found = c.search_runs([experiment_id(c, experiment)], filter_string=f"tags.`{tag}` = '{value}'",
                              max_results=1, order_by=["attributes.start_time DESC"])
        if found:
            c.update_run(found[0].info.run_id, status="RUNNING")
            return cls(c, found[0].info.run_id)
        return cls.start(uri, experiment, name=name, params=params, tags={**(tags or {}), tag: value})

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0, timestamp_ms: int | None = None) -> None:
        """Log ``metrics`` at ``step`` in one request (NaN is kept: MLflow stores it as NaN)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
                 if isinstance(v, int | float) and not (isinstance(v, float) and math.isinf(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_series(self, name: str, values: list[float]) -> None:
        """One metric with one value per step 0..n-1 (e.g. a loss per epoch)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(name, float(v), ts, step) for step, v in enumerate(values)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class RateLimit:
    """Lets an event through at most once per ``interval_s`` seconds (the first always passes).

    Example
    -------
    >>> limit = RateLimit(60.0)
    >>> limit.ready(), limit.ready()
    (True, False)
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.clock = float(interval_s), clock
        self.last: float | None = None

    def ready(self) -> bool:
        now = self.clock()
        if self.last is None or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False
