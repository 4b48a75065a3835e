"""Every ``dsgd retrain`` as an MLflow run (``retrain.mlflow_tracking_uri``; off when empty).

The run (experiment ``retrain.mlflow_experiment``, named after the snapshot) holds

- parameters: the ``[model]`` and ``[retrain]`` keys, the cut-off, the trainer's own parameters as it
  ran them (``als.*``: ALS's rank, maxIter, regParam, ...; ``warm_start.*`` for the warm-start policy),
  and the Delta versions it READ: ``events_version`` and ``factors_version_read``;
- metrics: the training and blend figures of :class:`batch.retrain.RetrainResult` (ALS ``train_rmse``,
  events, pairs, users, items, seconds; replayed events, swap attempts, rows written) and
  ``seconds.train|blend|total``; a per-epoch loss as a series;
- tags: ``status`` (blended | already_done | no_events), ``snapshot_id``, ``policy``, ``trainer`` and the
  Delta versions it WROTE: ``snapshot_version``, ``factors_version_written``.

A retrain that raises ends its run as FAILED. Use: ``with retrain_run(cfg) as run: ...; run.record(...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dsgd.core.config import Config
from dsgd.ops.tracking import TAG_JOB, Run, flat_params, numeric
from dsgd.store.tables import Tables

_OWN_KEYS = ("mlflow_tracking_uri", "mlflow_experiment")


class _Off:
    """The run when tracking is off: records nothing."""

    def record(self, spark: Any, rc: Any, res: Any) -> None:
        pass


class RetrainRun:
    """The MLflow run of one retrain."""

    def __init__(self, cfg: Config, run: Run) -> None:
        self.cfg, self.run = cfg, run

    def record(self, spark: Any, rc: Any, res: Any) -> None:
        """Log what the retrain ``res`` (a RetrainResult) did with the resolved ``[retrain]`` section ``rc``."""
        from batch.retrain import snapshot_meta

        snap = {}
        if res.status != "no_events":
            snap = snapshot_meta(spark, Tables.from_config(self.cfg).snapshots, res.as_of) or {}
        trainer = snap.get("trainer", "")
        prefix = "warm_start" if trainer == "dsgd-warm-start" else "als"
        params = {**flat_params("model", self.cfg.model), **flat_params("retrain", rc, skip=_OWN_KEYS),
                  **flat_params(prefix, snap.get("params", {})), "as_of": str(res.as_of)}
        if snap:
            params.update(events_version=str(snap.get("events_version")),
                          factors_version_read=str(snap.get("base_factors_version")))
        self.run.log_params(params)
        metrics = dict(res.metrics)
        self.run.log_metrics({**numeric(metrics), **{f"seconds.{k}": v for k, v in res.seconds.items()}})
        for name, values in metrics.items():
            if isinstance(values, list):
                self.run.log_series(name, values)
        self.run.set_tags({"mlflow.runName": f"retrain {res.snapshot_id}", "status": res.status,
                           "snapshot_id": res.snapshot_id, "policy": res.policy, "trainer": trainer,
                           "snapshot_version": res.snapshot_version,
                           "factors_version_written": res.factors_version if res.status == "blended" else ""})


@contextmanager
def retrain_run(cfg: Config) -> Iterator[RetrainRun | _Off]:
    """An MLflow run around one retrain (a no-op when ``retrain.mlflow_tracking_uri`` is empty).

    Raises :class:`~dsgd.core.config.ConfigError` at entry when the URI is set and MLflow is missing.
    """
    r = cfg.retrain
    if not r.mlflow_tracking_uri:
        yield _Off()
        return
    run = Run.start(r.mlflow_tracking_uri, r.mlflow_experiment, name="retrain",
                    tags={TAG_JOB: "retrain", "app.warehouse": cfg.app.warehouse})
    try:
        yield RetrainRun(cfg, run)
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
