"""The periodic retrain's Spark MLlib ALS fit, shared by ``dsgd retrain`` (:mod:`batch.retrain`) and the
evaluation harness (:mod:`dsgd.evaluation.models`), so the harness measures the retrain users run.

- :func:`dense_index`: string ids -> a dense 32-bit ALS index (never truncated);
- :func:`als_ratings`: one ALS input row per (user, item): the event count (implicit; optionally
  time-decayed) or the latest rating (explicit);
- :func:`recent_history`: the ``retrain.window_days`` window of the history before the cut-off;
- :func:`train_als`: the fit with the ``[retrain]`` settings, factors mapped back to string ids;
- :func:`replay_seed`: the seed of the DSGD epochs a retrain runs for a cut-off (warm-start, replay).

Example
-------
>>> res = train_als(spark, cfg, cfg.retrain, history, as_of_ms=1_717_286_400_000)
>>> res.users.count(), res.metrics["seconds_fit"]
(943, 3.1)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsgd.core import columns as C
from dsgd.core.config import Config, RetrainConfig
from dsgd.core.hashing import mix_seed

MAX_DENSE_IDS = 2**31 - 1
DAY_MS = 86_400_000


def implicit_prefs(rc: RetrainConfig, model_kind: str) -> bool:
    """Resolve ``retrain.als_implicit_prefs`` (``auto`` follows ``model.kind``)."""
    if rc.als_implicit_prefs == "auto":
        return model_kind == "implicit"
    return rc.als_implicit_prefs == "true"


def replay_seed(as_of_ms: int) -> int:
    """The ``batch_id`` that seeds the replay / warm-start of the retrain with cut-off ``as_of_ms``."""
    return int(mix_seed(as_of_ms) % (2**31 - 1))


def decay_weight(age_ms: np.ndarray | float, half_life_days: float) -> np.ndarray | float:
    """``0.5 ** (age / half_life)`` (1 when ``half_life_days`` is 0): the confidence of an event that is
    ``age_ms`` older than the cut-off, as :func:`als_ratings` weighs it."""
    if not half_life_days:
        return np.ones_like(np.asarray(age_ms, np.float64)) if np.ndim(age_ms) else 1.0
    return np.power(0.5, np.asarray(age_ms, np.float64) / (half_life_days * DAY_MS))


def dense_index(ids: Any, column: str) -> Any:
    """Distinct values of ``column`` -> (``id`` string, ``idx`` int 0..n-1 in id order).

    Raises ValueError when there are more ids than a 32-bit ALS id can hold (never truncates).

    Example
    -------
    >>> dense_index(events, "user").orderBy("idx").first()
    Row(id='u000', idx=0)
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    distinct = ids.select(F.col(column).cast("string").alias(C.ID)).distinct()
    n = distinct.count()
    if n > MAX_DENSE_IDS:
        raise ValueError(f"{n} distinct {column} ids exceed the 32-bit id range of ALS ({MAX_DENSE_IDS})")
    return distinct.withColumn("idx", (F.row_number().over(Window.orderBy(C.ID)) - 1).cast("int"))


def recent_history(history: Any, rc: RetrainConfig, as_of_ms: int | None) -> Any:
    """The events ALS is fitted on: all of ``history``, or those newer than ``as_of - window_days``."""
    from pyspark.sql import functions as F

    if not rc.window_days or as_of_ms is None:
        return history
    return history.where(F.col(C.TS) > F.lit(int(as_of_ms - rc.window_days * DAY_MS)))


def als_ratings(history: Any, *, implicit: bool, as_of_ms: int | None = None, half_life_days: float = 0.0) -> Any:
    """One ALS input row per (user, item): the event count (implicit) or the latest rating (explicit).

    Implicit with ``half_life_days > 0``: each event counts ``0.5 ** ((as_of - ts) / half_life)``, so the
    confidence ``1 + als_alpha * r`` fades with the event's age at the cut-off.
    """
    from pyspark.sql import functions as F

    if implicit:
        if half_life_days and as_of_ms is not None:
            age_days = (F.lit(int(as_of_ms)) - F.col(C.TS)).cast("double") / F.lit(float(DAY_MS))
            w = F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(float(half_life_days)))
            return history.groupBy(C.USER, C.ITEM).agg(F.sum(w).cast("float").alias(C.RATING))
        return history.groupBy(C.USER, C.ITEM).agg(F.count(F.lit(1)).cast("float").alias(C.RATING))
    last = F.max_by(F.col(C.RATING), F.struct(C.TS, C.SEQ))
    return history.groupBy(C.USER, C.ITEM).agg(last.cast("float").alias(C.RATING))


@dataclass
class AlsResult:
    users: Any  # DataFrame, FACTOR_SCHEMA (id, key, vec, bias, count)
    items: Any
    mu: float
    n_ratings: int
    params: dict[str, Any]
    metrics: dict[str, Any]


def train_als(spark: Any, cfg: Config, rc: RetrainConfig, history: Any, *, as_of_ms: int | None = None
              ) -> AlsResult:
    """Fit MLlib ALS on ``history`` (user, item, rating, ts, seq) and map the factors back to string ids.

    Explicit: the latest rating per pair, minus the history mean ``mu`` when ``retrain.als_center``;
    ``train_rmse`` is measured on that input (equal on the rating scale). Implicit: events per pair
    (decayed by ``retrain.half_life_days`` from ``as_of_ms``) as preference strength with confidence
    ``1 + als_alpha * r``. ``retrain.window_days`` keeps only the recent events (from ``as_of_ms``).
    ``n_ratings`` and the factor rows' ``count`` cover the whole ``history``.

    Example
    -------
    >>> res = train_als(spark, cfg, RetrainConfig(als_max_iter=5), history)
    >>> res.metrics["train_rmse"]
    0.62
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    m = cfg.model
    implicit = implicit_prefs(rc, m.kind)
    t0 = time.perf_counter()
    spark.sparkContext.setCheckpointDir(f"{cfg.app.checkpoint_root.rstrip('/')}/als")
    stats = history.agg(F.count(F.lit(1)).alias("n"), F.avg(C.RATING).alias("mu")).first()
    n_ratings = int(stats["n"])
    fit_on = recent_history(history, rc, as_of_ms)
    if fit_on is not history:
        fit_on = fit_on.localCheckpoint()
        if fit_on.isEmpty():  # nothing recent: fit on the whole history rather than on nothing
            fit_on = history
    mu = float(stats["mu"]) if (not implicit and rc.als_center and stats["mu"] is not None) else 0.0
    uidx = dense_index(fit_on, C.USER).localCheckpoint()
    iidx = dense_index(fit_on, C.ITEM).localCheckpoint()
    n_users, n_items = uidx.count(), iidx.count()
    pairs = als_ratings(fit_on, implicit=implicit, as_of_ms=as_of_ms, half_life_days=rc.half_life_days)
    data = (pairs.join(uidx.select(F.col(C.ID).alias(C.USER), F.col("idx").alias("u")), C.USER)
            .join(iidx.select(F.col(C.ID).alias(C.ITEM), F.col("idx").alias("i")), C.ITEM)
            .select("u", "i", (F.col(C.RATING) - F.lit(mu)).cast("float").alias("r"))).localCheckpoint()
    params = {"rank": m.rank, "maxIter": rc.als_max_iter, "regParam": rc.als_reg, "implicitPrefs": implicit,
              "alpha": rc.als_alpha, "seed": m.seed, "checkpointInterval": rc.checkpoint_interval,
              "center": bool(mu != 0.0 or (rc.als_center and not implicit))}
    if rc.window_days:
        params["window_days"] = rc.window_days
    if rc.half_life_days and implicit:
        params["half_life_days"] = rc.half_life_days
    als = ALS(rank=m.rank, maxIter=rc.als_max_iter, regParam=rc.als_reg, implicitPrefs=implicit,
              alpha=rc.als_alpha, userCol="u", itemCol="i", ratingCol="r", seed=m.seed,
              checkpointInterval=rc.checkpoint_interval, coldStartStrategy="nan", nonnegative=False)
    if rc.als_blocks:
        als = als.setNumUserBlocks(rc.als_blocks).setNumItemBlocks(rc.als_blocks)
        params["blocks"] = rc.als_blocks
    model = als.fit(data)
    t_fit = time.perf_counter() - t0
    metrics: dict[str, Any] = {"n_events": n_ratings, "n_pairs": data.count(), "n_users": n_users,
                               "n_items": n_items, "seconds_fit": round(t_fit, 3)}
    if not implicit:
        pred = model.transform(data)
        metrics["train_rmse"] = float(pred.select(F.sqrt(F.avg((F.col("prediction") - F.col("r")) ** 2)))
                                      .first()[0])

    def back(factors: DataFrame, index: DataFrame, column: str) -> DataFrame:
        counts = history.groupBy(F.col(column).alias(C.ID)).agg(F.count(F.lit(1)).alias(C.COUNT))
        return (factors.join(index, factors["id"] == index["idx"]).select(index[C.ID].alias(C.ID), "features")
                .join(counts, C.ID, "left")
                .select(C.ID, F.xxhash64(C.ID).alias(C.KEY), F.col("features").cast("array<float>").alias(C.VEC),
                        F.lit(0.0).cast("float").alias(C.BIAS),
                        F.coalesce(C.COUNT, F.lit(0)).cast("long").alias(C.COUNT)))

    return AlsResult(users=back(model.userFactors, uidx, C.USER), items=back(model.itemFactors, iidx, C.ITEM),
                     mu=mu, n_ratings=n_ratings, params=params, metrics=metrics)


__all__ = ["MAX_DENSE_IDS", "AlsResult", "als_ratings", "decay_weight", "dense_index",
           "implicit_prefs", "recent_history", "replay_seed", "train_als"]
