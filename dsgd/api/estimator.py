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

import numpy as np
import pandas as pd

from dsgd.api.inputs import (
    _MODEL_FIELDS,
    _cfg_range,
    _check_choice,
    _check_column_name,
    _check_number,
    _derived_seq,
    _distinct_pairs,
    _factor_rows_to_side,
    _ids_to_str,
    _is_spark_df,
    _mean_rating,
    _normalise_pandas_types,
    _spark_id,
    _ts_to_ms,
)
from dsgd.api.model import COLD_START_STRATEGIES, DSGDModel
from dsgd.core import columns as C
from dsgd.core.config import ModelConfig
from dsgd.core.params import KernelParams
from dsgd.core.schedules import Schedule, make_schedule

log = logging.getLogger(__name__)

KINDS = ("explicit", "implicit")
ENGINES = ("spark", "local")


class DSGD:
    """Stratified distributed SGD matrix factorisation (Gemulla et al. 2011), explicit or implicit.

    All parameters are keyword-only and checked here; a bad value raises ``ValueError`` naming the
    parameter and what is allowed. Ranges and choices are the ones of :class:`dsgd.core.config.ModelConfig`.

    Parameters
    ----------
    rank : int, default 10
        Number of latent factors, 1..1024.
    kind : str, default "explicit"
        Supported values: ``"explicit"`` (biased MF on ratings:
        ``r ~ mu + b_u + b_i + p_u.q_i``, ``mu`` = mean training rating) and ``"implicit"`` (every event
        is a positive with target 1, followed by ``negatives`` sampled negatives with target 0; the
        rating column is ignored).
    lr : float, default 0.05
        Initial learning rate, > 0.
    lr_schedule : str, default "constant"
        Learning rate over the epochs. Supported values: ``"constant"``, ``"inverse_sqrt"``
        (``lr / sqrt(1 + epoch)``), ``"bold_driver"`` (x1.05 after an epoch whose loss fell, x0.5 else).
    reg : float, default 0.0
        L2 regularisation of the updated vectors and biases, >= 0.
    use_bias : bool or None, default None
        Learn user and item biases. None: True for explicit, False for implicit. Explicit models
        always learn biases (False raises).
    init_scale : float, default 0.01
        Initial vector components are uniform in ``[-init_scale, init_scale]``, from a seeded hash of
        the id (the same in every process and run).
    negatives : int, default 19
        Negative samples per positive (implicit only), >= 0.
    negative_sampling : str, default "uniform"
        Supported values: ``"uniform"`` and ``"popularity"`` (weights ``count + 1``). Negatives come
        from the known items of the positive's item block.
    blocks : int, default 2
        ``d``: users and items are hashed into d blocks each; an epoch runs d strata of d blocks that
        run in parallel. ``blocks=1`` is plain sequential SGD in event-time order.
    strata_order : str, default "rotation"
        Supported values: ``"rotation"`` and ``"permutation"`` (seeded per epoch).
    epochs : int, default 10
        Passes over the training data, >= 1.
    seed : int, default 42
        Seed of the initial vectors, strata permutations and negative sampling, >= 0.
    engine : str, default "spark"
        Supported values: ``"spark"`` (blocks in Python workers via Arrow; needs an active SparkSession
        and a Spark DataFrame) and ``"local"`` (driver threads on numpy arrays). Both give the same
        factors. A pandas input always trains locally.
    spark_exchange : str, default "auto"
        How the spark engine moves factors between strata. Supported values: ``"barrier"`` (one
        barrier stage runs every epoch; tasks keep their user blocks and swap item blocks over direct
        TCP connections; every task holds all item factors), ``"shuffle"`` (one stage per stratum,
        every factor row shuffled; any size, 1-4 s of fixed cost per stratum) and ``"auto"`` (barrier
        while the item factors take at most 32 MB and dynamic allocation is off). Same factors.
    user_col, item_col, rating_col, time_col : str
        Input column names (defaults ``"user"``, ``"item"``, ``"rating"``, ``"ts"``). Ids may be
        integer or string columns; time is epoch milliseconds (integer) or a timestamp; a missing
        time column means ``ts = 0`` for every event.
    cold_start_strategy : str, default "nan"
        What :meth:`DSGDModel.transform` does with rows whose user or item is unknown. Supported
        values: ``"nan"`` (prediction NaN, like MLlib) and ``"drop"`` (the rows are removed).

    Examples
    --------
    >>> est = DSGD(rank=8, kind="explicit", lr=0.01, reg=0.05, epochs=15, blocks=2)
    >>> model = est.fit(spark.read.parquet("ratings"))
    >>> model.history[-1]["loss"]
    0.71...
    """

    def __init__(self, *, rank: int = 10, kind: str = "explicit", lr: float = 0.05,
                 lr_schedule: str = "constant", reg: float = 0.0, use_bias: bool | None = None,
                 init_scale: float = 0.01, negatives: int = 19, negative_sampling: str = "uniform",
                 blocks: int = 2, strata_order: str = "rotation", epochs: int = 10, seed: int = 42,
                 engine: str = "spark", spark_exchange: str = "auto", user_col: str = C.USER, item_col: str = C.ITEM,
                 rating_col: str = C.RATING, time_col: str = C.TS, cold_start_strategy: str = "nan") -> None:
        self.kind = _check_choice("kind", kind, KINDS)
        self.rank = _check_number("rank", rank, integer=True, lo=1, hi=_cfg_range("rank")[1])
        self.lr = _check_number("lr", lr, integer=False, lo=0.0, hi=_cfg_range("lr")[1], lo_open=True)
        self.lr_schedule = _check_choice("lr_schedule", lr_schedule, _MODEL_FIELDS["lr_schedule"].metadata["choices"])
        self.reg = _check_number("reg", reg, integer=False, lo=0.0, hi=_cfg_range("reg")[1])
        if use_bias is not None and not isinstance(use_bias, bool | np.bool_):
            raise ValueError(f"DSGD: use_bias must be True, False or None, got {use_bias!r}")
        if kind == "explicit" and use_bias is False:
            raise ValueError("DSGD: use_bias=False is not supported for kind='explicit' (explicit models "
                             "always learn user and item biases); leave use_bias=None")
        self.use_bias = bool(use_bias) if use_bias is not None else kind == "explicit"
        self.init_scale = _check_number("init_scale", init_scale, integer=False, lo=0.0,
                                        hi=_cfg_range("init_scale")[1])
        self.negatives = _check_number("negatives", negatives, integer=True, lo=0, hi=_cfg_range("negatives")[1])
        self.negative_sampling = _check_choice("negative_sampling", negative_sampling,
                                               _MODEL_FIELDS["negative_sampling"].metadata["choices"])
        self.blocks = _check_number("blocks", blocks, integer=True, lo=1, hi=_cfg_range("blocks")[1])
        self.strata_order = _check_choice("strata_order", strata_order,
                                          _MODEL_FIELDS["strata_order"].metadata["choices"])
        self.epochs = _check_number("epochs", epochs, integer=True, lo=1, hi=_cfg_range("epochs")[1])
        self.seed = _check_number("seed", seed, integer=True, lo=0, hi=_cfg_range("seed")[1])
        self.engine = _check_choice("engine", engine, ENGINES)
        self.spark_exchange = _check_choice("spark_exchange", spark_exchange,
                                            _MODEL_FIELDS["spark_exchange"].metadata["choices"])
        self.user_col = _check_column_name("user_col", user_col)
        self.item_col = _check_column_name("item_col", item_col)
        self.rating_col = _check_column_name("rating_col", rating_col)
        self.time_col = _check_column_name("time_col", time_col)
        self.cold_start_strategy = _check_choice("cold_start_strategy", cold_start_strategy,
                                                 COLD_START_STRATEGIES)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, **overrides: Any) -> DSGD:
        """An estimator from the ``[model]`` config section, with keyword overrides.

        ``use_bias`` follows the config's contract: always on for explicit models.
        ``rating_min``/``rating_max`` are ingestion checks and are not used here.

        Examples
        --------
        >>> cfg = load_config(profile="local")
        >>> est = DSGD.from_config(cfg.model, epochs=20, engine="local")
        """
        if not isinstance(model_cfg, ModelConfig):
            raise ValueError(f"DSGD.from_config: model_cfg must be a dsgd.core.config.ModelConfig, got "
                             f"{type(model_cfg).__name__} (pass cfg.model, not cfg)")
        kw: dict[str, Any] = {name: getattr(model_cfg, name) for name in (
            "rank", "kind", "lr", "lr_schedule", "reg", "init_scale", "negatives", "negative_sampling",
            "blocks", "strata_order", "epochs", "seed", "engine", "spark_exchange")}
        kw["use_bias"] = None if model_cfg.kind == "explicit" else model_cfg.use_bias
        allowed = set(kw) | {"user_col", "item_col", "rating_col", "time_col", "cold_start_strategy"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"DSGD.from_config: unknown override(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        kw.update(overrides)
        if kw["kind"] == "explicit" and "use_bias" not in overrides:
            kw["use_bias"] = None
        return cls(**kw)

    def get_params(self) -> dict[str, Any]:
        """All constructor parameters as a dict (JSON-friendly).

        Examples
        --------
        >>> DSGD(rank=4).get_params()["rank"]
        4
        """
        return {k: getattr(self, k) for k in (
            "rank", "kind", "lr", "lr_schedule", "reg", "use_bias", "init_scale", "negatives",
            "negative_sampling", "blocks", "strata_order", "epochs", "seed", "engine", "spark_exchange", "user_col",
            "item_col", "rating_col", "time_col", "cold_start_strategy")}

    def __repr__(self) -> str:
        return "DSGD(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def kernel_params(self, mu: float = 0.0) -> KernelParams:
        """The :class:`KernelParams` this estimator trains with (``mu`` = global mean, explicit only).

        Examples
        --------
        >>> DSGD(kind="implicit", negatives=5).kernel_params().negatives
        5
        """
        implicit = self.kind == "implicit"
        return KernelParams(lr=self.lr, reg=self.reg, mu=0.0 if implicit else float(mu), implicit=implicit,
                            use_bias=self.use_bias, negatives=self.negatives if implicit else 0,
                            negative_sampling=self.negative_sampling)

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
            return self._fit_local(self._prepare_pandas(ratings), engine="local")
        if not _is_spark_df(ratings):
            raise ValueError(f"DSGD.fit: ratings must be a pyspark.sql.DataFrame or a pandas.DataFrame, got "
                             f"{type(ratings).__name__}")
        events = self._prepare_spark(ratings)
        if self.engine == "local":
            pdf = events.toPandas()
            return self._fit_local(_normalise_pandas_types(pdf), engine="local")
        return self._fit_spark(events, task_hook)

    # -- input preparation

    def _prepare_pandas(self, df: pd.DataFrame) -> pd.DataFrame:
        """Events in the common schema (user, item str; rating float32; ts, seq int64)."""
        self._require_columns(list(df.columns), "pandas DataFrame")
        out = pd.DataFrame({C.USER: _ids_to_str(df[self.user_col], self.user_col),
                            C.ITEM: _ids_to_str(df[self.item_col], self.item_col)})
        if self.rating_col in df.columns:
            out[C.RATING] = pd.to_numeric(df[self.rating_col], errors="raise").to_numpy(np.float32)
        else:
            out[C.RATING] = np.full(len(df), np.nan, np.float32)
        out[C.TS] = _ts_to_ms(df[self.time_col]) if self.time_col in df.columns else np.zeros(len(df), np.int64)
        self._check_pandas_values(out)
        if C.SEQ in df.columns:
            out[C.SEQ] = df[C.SEQ].to_numpy(np.int64)
        else:
            out[C.SEQ] = _derived_seq(out)
        return out.reset_index(drop=True)

    def _check_pandas_values(self, out: pd.DataFrame) -> None:
        if out[C.USER].isna().any() or out[C.ITEM].isna().any():
            raise ValueError(f"DSGD.fit: {self.user_col}/{self.item_col} hold null ids; drop those rows first")
        if self.kind == "explicit":
            bad = int((~np.isfinite(out[C.RATING].to_numpy())).sum())
            if bad:
                raise ValueError(f"DSGD.fit: kind='explicit' needs a finite {self.rating_col!r} on every row; "
                                 f"{bad} row(s) are null/NaN/inf")

    def _require_columns(self, cols: list[str], what: str) -> None:
        need = [self.user_col, self.item_col] + ([self.rating_col] if self.kind == "explicit" else [])
        missing = [c for c in need if c not in cols]
        if missing:
            raise ValueError(f"DSGD.fit: the {what} lacks column(s) {', '.join(missing)} (has: "
                             f"{', '.join(cols)}); set user_col/item_col/rating_col to the right names")

    def _prepare_spark(self, df: Any) -> Any:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        self._require_columns(df.columns, "Spark DataFrame")
        types = dict(df.dtypes)
        cols = [_spark_id(df, self.user_col, types).alias(C.USER), _spark_id(df, self.item_col, types).alias(C.ITEM)]
        if self.rating_col in types:
            if types[self.rating_col] not in ("float", "double", "int", "bigint", "smallint", "tinyint") \
                    and not types[self.rating_col].startswith("decimal"):
                raise ValueError(f"DSGD.fit: rating column {self.rating_col!r} must be numeric, got "
                                 f"{types[self.rating_col]}")
            cols.append(F.col(self.rating_col).cast("float").alias(C.RATING))
        else:
            cols.append(F.lit(None).cast("float").alias(C.RATING))
        if self.time_col in types:
            t = types[self.time_col]
            if t in ("timestamp", "timestamp_ntz"):
                cols.append(F.unix_millis(F.col(self.time_col).cast("timestamp")).alias(C.TS))
            elif t in ("bigint", "int", "smallint", "tinyint"):
                cols.append(F.col(self.time_col).cast("long").alias(C.TS))
            else:
                raise ValueError(f"DSGD.fit: time column {self.time_col!r} must be an integer (epoch ms) or a "
                                 f"timestamp, got {t}")
        else:
            cols.append(F.lit(0).cast("long").alias(C.TS))
        has_seq = C.SEQ in types and types[C.SEQ] in ("bigint", "int")
        if has_seq:
            cols.append(F.col(C.SEQ).cast("long").alias(C.SEQ))
        ev = df.select(*cols)
        if not has_seq:
            # identical (ts, user, item, rating) rows are interchangeable, so this order is deterministic
            w = Window.orderBy(F.col(C.TS).asc(), F.col(C.USER).asc(), F.col(C.ITEM).asc(),
                               F.col(C.RATING).asc_nulls_last())
            ev = ev.withColumn(C.SEQ, (F.row_number().over(w) - 1).cast("long"))
        return ev

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
        model._set_side("u", _factor_rows_to_side(fu.select(C.ID, C.VEC, C.BIAS, C.COUNT).toPandas(), self.rank))
        model._set_side("i", _factor_rows_to_side(fi.select(C.ID, C.VEC, C.BIAS, C.COUNT).toPandas(), self.rank))
        model.history = stats
        model._set_seen(_distinct_pairs(events.select(C.USER, C.ITEM).distinct().toPandas()))
        return model


