"""Batch estimator API over the DSGD engines: ``DSGD(...).fit(ratings) -> DSGDModel``.

:class:`DSGD` validates every hyper-parameter once, at construction, and runs ``epochs`` epochs of
stratified SGD (``batch_id = 0``) through the Spark engine (:func:`dsgd.engines.spark.train_epochs_spark`,
one Spark stage per stratum) or the in-process engine (:func:`dsgd.engines.local.train_epochs`); both give the
same factors. :class:`DSGDModel` holds the factors as numpy arrays (rows sorted by id) and scores,
recommends, evaluates, continues training (:meth:`DSGDModel.partial_fit`) and saves itself.

Input events (Spark or pandas DataFrame) need a user and an item column (integer or string ids; integers
become ``str(int)``, so ``42`` and ``"42"`` are the same id), a rating column for explicit models, and
optionally an event-time column (epoch ms, integer or timestamp; missing: 0 for every event) and a
``seq`` tie-breaker (missing: the position in ``(ts, user, item, rating)`` order, the same on every run).

Example
-------
>>> from dsgd.api import DSGD
>>> model = DSGD(rank=10, kind="explicit", lr=0.01, reg=0.05, epochs=20, engine="local").fit(ratings_pdf)
>>> model.predict(["196"], ["242"])
array([3.71...])
>>> model.recommend(["196"], k=5)          # pandas: user, rank, item, score
>>> model.transform(test_sdf)             # Spark DataFrame + "prediction"
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from dsgd.api import params as P
from dsgd.api.inputs import (
    _distinct_pairs,
    _is_spark_df,
    _mean_rating,
    _normalise_pandas_types,
    prepare_pandas,
    prepare_spark,
)
from dsgd.api.model import DSGDModel
from dsgd.core import columns as C
from dsgd.core.config import ModelConfig
from dsgd.core.factors import SideFactors
from dsgd.core.params import KernelParams, params_from_model_config
from dsgd.core.schedules import Schedule, make_schedule

log = logging.getLogger(__name__)

_D = P.DEFAULTS


class DSGD:
    """Stratified distributed SGD matrix factorisation (Gemulla et al. 2011), explicit or implicit.

    The hyper-parameters are the ``[model]`` config keys, with the same defaults and allowed values
    (declared once in :class:`dsgd.core.config.ModelConfig`); all are keyword-only and checked here: a bad
    value raises ``ValueError`` naming the parameter and what is allowed. ``epochs`` defaults to the
    stream's one pass per micro-batch; a batch fit usually wants 10-20.

    {params}

    Examples
    --------
    >>> est = DSGD(rank=8, kind="explicit", lr=0.01, reg=0.05, epochs=15, blocks=2)
    >>> model = est.fit(spark.read.parquet("ratings"))
    >>> model.history[-1]["loss"]
    0.71...
    """

    def __init__(self, *, rank: int = _D.rank, kind: str = _D.kind, lr: float = _D.lr,
                 lr_schedule: str = _D.lr_schedule, reg: float = _D.reg, use_bias: bool | None = None,
                 init_scale: float = _D.init_scale, negatives: int = _D.negatives,
                 negative_sampling: str = _D.negative_sampling, blocks: int = _D.blocks,
                 strata_order: str = _D.strata_order, epochs: int = _D.epochs, seed: int = _D.seed,
                 engine: str = _D.engine, spark_exchange: str = _D.spark_exchange, user_col: str = C.USER,
                 item_col: str = C.ITEM, rating_col: str = C.RATING, time_col: str = C.TS,
                 cold_start_strategy: str = "nan") -> None:
        given = dict(locals())
        for name in P.PARAM_NAMES:
            setattr(self, name, P.check(name, given[name]))
        self.use_bias = P.resolve_bias(self.kind, self.use_bias)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, **overrides: Any) -> DSGD:
        """An estimator from the ``[model]`` config section, with keyword overrides.

        ``rating_min``/``rating_max`` are ingestion checks and are not used here.

        Examples
        --------
        >>> cfg = load_config(profile="local")
        >>> est = DSGD.from_config(cfg.model, epochs=20, engine="local")
        """
        if not isinstance(model_cfg, ModelConfig):
            raise ValueError(f"DSGD.from_config: model_cfg must be a dsgd.core.config.ModelConfig, got "
                             f"{type(model_cfg).__name__} (pass cfg.model, not cfg)")
        unknown = sorted(set(overrides) - set(P.PARAM_NAMES))
        if unknown:
            raise ValueError(f"DSGD.from_config: unknown override(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(P.PARAM_NAMES))}")
        kw: dict[str, Any] = {name: getattr(model_cfg, name) for name in P.MODEL_KEYS}
        kw.update(overrides)
        if "use_bias" not in overrides:  # the config's False means "the kind's default" for explicit models
            kw["use_bias"] = None if kw["kind"] == "explicit" else model_cfg.use_bias
        return cls(**kw)

    def get_params(self) -> dict[str, Any]:
        """All constructor parameters as a dict (JSON-friendly).

        Examples
        --------
        >>> DSGD(rank=4).get_params()["rank"]
        4
        """
        return {k: getattr(self, k) for k in P.PARAM_NAMES}

    def model_config(self) -> ModelConfig:
        """The ``[model]`` config section these parameters are (what the streaming trainer would run)."""
        return ModelConfig(**{k: getattr(self, k) for k in P.MODEL_KEYS})

    def __repr__(self) -> str:
        return "DSGD(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def kernel_params(self, mu: float = 0.0) -> KernelParams:
        """The :class:`KernelParams` this estimator trains with (``mu`` = global mean, explicit only):
        derived from the parameters as the streaming trainer derives its own.

        Examples
        --------
        >>> DSGD(kind="implicit", negatives=5).kernel_params().negatives
        5
        """
        return params_from_model_config(self.model_config(), mu=mu if self.kind == "explicit" else 0.0)

    def make_schedule(self) -> Schedule:
        """A fresh learning-rate schedule (``lr_schedule`` starting at ``lr``).

        Examples
        --------
        >>> DSGD(lr=0.1, lr_schedule="inverse_sqrt").make_schedule().rate(3)
        0.05
        """
        return make_schedule(self.lr_schedule, self.lr)

    # ------------------------------------------------------------------ fit

    def fit(self, ratings: Any, *, task_hook: Any = None) -> DSGDModel:
        """Train on all events of ``ratings`` for ``epochs`` epochs (``batch_id = 0``).

        Parameters
        ----------
        ratings : pyspark.sql.DataFrame or pandas.DataFrame
            Events with ``user_col``, ``item_col`` (integer or string ids), ``rating_col`` (explicit:
            required and non-null; implicit: ignored) and optionally ``time_col`` and ``seq``. A pandas
            input trains with the local engine and needs no Spark.

        Returns
        -------
        DSGDModel
            ``history`` holds one dict per epoch: ``epoch``, ``lr``, ``loss`` (mean squared error of the
            positives before each update), ``updates``, ``seconds``.

        Examples
        --------
        >>> model = DSGD(rank=10, lr=0.01, reg=0.05, epochs=20).fit(spark.createDataFrame(pdf))
        >>> len(model.history)
        20
        """
        if isinstance(ratings, pd.DataFrame):
            return self._fit_local(prepare_pandas(self, ratings), engine="local")
        if not _is_spark_df(ratings):
            raise ValueError(f"DSGD.fit: ratings must be a pyspark.sql.DataFrame or a pandas.DataFrame, got "
                             f"{type(ratings).__name__}")
        events = prepare_spark(self, ratings)
        if self.engine == "local":
            pdf = events.toPandas()
            return self._fit_local(_normalise_pandas_types(pdf), engine="local")
        return self._fit_spark(events, task_hook)

    # -- engines

    def _fit_local(self, ev: pd.DataFrame, *, engine: str) -> DSGDModel:
        if len(ev) == 0:
            raise ValueError("DSGD.fit: no events to train on")
        mu = _mean_rating(ev[C.RATING].to_numpy()) if self.kind == "explicit" else 0.0
        model = DSGDModel._empty(self, mu=mu, engine=engine)
        model.history = model._train_local(ev, batch_id=0, epochs=self.epochs, schedule=self.make_schedule())
        model._set_seen(_distinct_pairs(ev))
        return model

    def _fit_spark(self, events: Any, task_hook: Any = None) -> DSGDModel:
        from pyspark.sql import functions as F

        from dsgd.engines.spark import FACTOR_SCHEMA, ensure_ids, train_epochs_spark

        spark = events.sparkSession
        events = events.localCheckpoint()
        agg = events.agg(F.count(F.lit(1)).alias("n"),
                         F.sum(F.when(F.col(C.USER).isNull() | F.col(C.ITEM).isNull(), 1).otherwise(0)).alias("null_ids"),
                         F.sum(F.when(F.col(C.RATING).isNull() | F.isnan(C.RATING), 1).otherwise(0)).alias("null_r"),
                         F.sum(F.col(C.RATING).cast("double")).alias("sum_r")).collect()[0]
        if agg["n"] == 0:
            raise ValueError("DSGD.fit: no events to train on")
        if agg["null_ids"]:
            raise ValueError(f"DSGD.fit: {self.user_col}/{self.item_col} hold null ids in {agg['null_ids']} "
                             "row(s); drop those rows first")
        mu = 0.0
        if self.kind == "explicit":
            if agg["null_r"]:
                raise ValueError(f"DSGD.fit: kind='explicit' needs a finite {self.rating_col!r} on every row; "
                                 f"{agg['null_r']} row(s) are null/NaN")
            mu = float(agg["sum_r"]) / int(agg["n"])
        est_params = self.kernel_params(mu)
        empty = spark.createDataFrame([], FACTOR_SCHEMA)
        users0 = ensure_ids(empty, events.select(F.col(C.USER).alias(C.ID)))
        items0 = ensure_ids(empty, events.select(F.col(C.ITEM).alias(C.ID)))
        fu, fi, stats = train_epochs_spark(spark, events, users0, items0, est_params, d=self.blocks,
                                           epochs=self.epochs, schedule=self.make_schedule(),
                                           strata_order=self.strata_order, seed=self.seed, batch_id=0,
                                           init_scale=self.init_scale, rank=self.rank,
                                           exchange=self.spark_exchange, task_hook=task_hook)
        model = DSGDModel._empty(self, mu=mu, engine="spark")
        model._set_side("u", SideFactors.from_arrow(fu.select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT).toArrow(), self.rank))
        model._set_side("i", SideFactors.from_arrow(fi.select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT).toArrow(), self.rank))
        model.history = stats
        model._set_seen(_distinct_pairs(events.select(C.USER, C.ITEM).distinct().toPandas()))
        return model


DSGD.__doc__ = DSGD.__doc__.replace("{params}", P.docstring().replace("\n", "\n    "))
