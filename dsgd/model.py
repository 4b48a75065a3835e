"""Batch estimator API over the DSGD engines: ``DSGD(...).fit(ratings) -> DSGDModel``.

:class:`DSGD` validates every hyper-parameter once, at construction, and runs ``epochs`` epochs of
stratified SGD (``batch_id = 0``) through the Spark engine (:func:`dsgd.spark_engine.train_epochs_spark`,
one Spark stage per stratum) or the in-process engine (:func:`dsgd.local.train_epochs`); both give the
same factors. :class:`DSGDModel` holds the factors as numpy arrays (rows sorted by id) and scores,
recommends, evaluates, continues training (:meth:`DSGDModel.partial_fit`) and saves itself.

Input events (Spark or pandas DataFrame) need a user and an item column (integer or string ids; integers
become ``str(int)``, so ``42`` and ``"42"`` are the same id), a rating column for explicit models, and
optionally an event-time column (epoch ms, integer or timestamp; missing: 0 for every event) and a
``seq`` tie-breaker (missing: the position in ``(ts, user, item, rating)`` order, the same on every run).

Example
-------
>>> from dsgd.model import DSGD
>>> model = DSGD(rank=10, kind="explicit", lr=0.01, reg=0.05, epochs=20, engine="local").fit(ratings_pdf)
>>> model.predict(["196"], ["242"])
array([3.71...])
>>> model.recommend(["196"], k=5)          # pandas: user, rank, item, score
>>> model.transform(test_sdf)             # Spark DataFrame + "prediction"
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsgd import columns as C
from dsgd.config import ModelConfig
from dsgd.hashing import id_key
from dsgd.local import SideFactors, train_epochs
from dsgd.params import KernelParams
from dsgd.schedules import Schedule, make_schedule

log = logging.getLogger(__name__)

KINDS = ("explicit", "implicit")
ENGINES = ("spark", "local")
COLD_START_STRATEGIES = ("nan", "drop")
PREDICTION = "prediction"
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- argument checks


def _check_choice(name: str, value: Any, choices: tuple) -> str:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"DSGD: {name}={value!r} is not supported; allowed values: {allowed}")
    return value


def _check_number(name: str, value: Any, *, integer: bool, lo: float | None, hi: float | None,
                  lo_open: bool = False) -> Any:
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type:
        kind = "an int" if integer else "a number"
        raise ValueError(f"DSGD: {name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not integer and not math.isfinite(float(value)):
        raise ValueError(f"DSGD: {name} must be finite, got {value!r}")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" <= {hi}"
        raise ValueError(f"DSGD: {name}={value!r} is out of range; allowed: {lo_s}{name}{hi_s}")
    return int(value) if integer else float(value)


def _cfg_range(name: str) -> tuple[float | None, float | None]:
    meta = _MODEL_FIELDS[name].metadata
    return meta.get("lo"), meta.get("hi")


def _check_column_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"DSGD: {name} must be a non-empty column name, got {value!r}")
    return value


# --------------------------------------------------------------------------- estimator


class DSGD:
    """Stratified distributed SGD matrix factorisation (Gemulla et al. 2011), explicit or implicit.

    All parameters are keyword-only and checked here; a bad value raises ``ValueError`` naming the
    parameter and what is allowed. Ranges and choices are the ones of :class:`dsgd.config.ModelConfig`.

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
            raise ValueError(f"DSGD.from_config: model_cfg must be a dsgd.config.ModelConfig, got "
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

    def fit(self, ratings: Any) -> DSGDModel:
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
        return self._fit_spark(events)

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

    def _fit_spark(self, events: Any) -> DSGDModel:
        from pyspark.sql import functions as F

        from dsgd.spark_engine import FACTOR_SCHEMA, ensure_ids, train_epochs_spark

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
                                           exchange=self.spark_exchange)
        model = DSGDModel._empty(self, mu=mu, engine="spark")
        model._set_side("u", _factor_rows_to_side(fu.select(C.ID, C.VEC, C.BIAS, C.COUNT).toPandas(), self.rank))
        model._set_side("i", _factor_rows_to_side(fi.select(C.ID, C.VEC, C.BIAS, C.COUNT).toPandas(), self.rank))
        model.history = stats
        model._set_seen(_distinct_pairs(events.select(C.USER, C.ITEM).distinct().toPandas()))
        return model


# --------------------------------------------------------------------------- model


class DSGDModel:
    """A trained factor model. Rows of every side array are sorted by id.

    Attributes
    ----------
    rank : int
    kind : str
        ``"explicit"`` or ``"implicit"``.
    mu : float
        Global mean rating (explicit; 0.0 for implicit).
    params : dict
        The estimator's parameters (:meth:`DSGD.get_params`).
    engine : str
        The engine ``fit`` ran on.
    history : list of dict
        Per-epoch stats of ``fit``: ``epoch``, ``lr``, ``loss``, ``updates``, ``seconds``.
    user_ids, item_ids : numpy object arrays of str
    user_vecs, item_vecs : float32 [n, rank]
    user_bias, item_bias : float32 [n]
    user_count, item_count : int64 [n]
        SGD updates per id as the engine counts them (events x epochs; they feed popularity-weighted
        negative sampling). Cold-user popularity is :meth:`item_popularity` instead.
    """

    def __init__(self, *, params: dict[str, Any], mu: float, engine: str,
                 users: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 items: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 history: list[dict] | None = None, seen: pd.DataFrame | None = None) -> None:
        self.params = dict(params)
        self.rank = int(params["rank"])
        self.kind = str(params["kind"])
        self.mu = float(mu)
        self.engine = engine
        self.history: list[dict] = list(history or [])
        self._set_side("u", users)
        self._set_side("i", items)
        self._set_seen(seen if seen is not None else pd.DataFrame({C.USER: [], C.ITEM: []}, dtype=object))

    @classmethod
    def _empty(cls, est: DSGD, *, mu: float, engine: str) -> DSGDModel:
        r = est.rank
        empty = (np.zeros(0, object), np.zeros((0, r), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return cls(params=est.get_params(), mu=mu, engine=engine, users=empty, items=empty)

    def _set_side(self, side: str, rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        ids, vec, bias, count = rows
        ids = np.asarray(ids, dtype=object)
        order = np.argsort(ids.astype(str), kind="stable") if len(ids) else np.zeros(0, np.int64)
        ids = ids[order]
        vec = np.ascontiguousarray(np.asarray(vec, np.float32).reshape(len(ids), self.rank)[order]) \
            if len(ids) else np.zeros((0, self.rank), np.float32)
        bias = np.ascontiguousarray(np.asarray(bias, np.float32)[order])
        count = np.ascontiguousarray(np.asarray(count, np.int64)[order])
        if side == "u":
            self.user_ids, self.user_vecs, self.user_bias, self.user_count = ids, vec, bias, count
            self._user_index = pd.Index(ids)
        else:
            self.item_ids, self.item_vecs, self.item_bias, self.item_count = ids, vec, bias, count
            self._item_index = pd.Index(ids)
            self._popularity: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"DSGDModel(kind={self.kind!r}, rank={self.rank}, users={len(self.user_ids)}, "
                f"items={len(self.item_ids)}, mu={self.mu:.4f}, engine={self.engine!r})")

    def _set_seen(self, seen: pd.DataFrame) -> None:
        self._seen = seen
        self._popularity = None

    @property
    def seen(self) -> pd.DataFrame:
        """The distinct training ``(user, item)`` pairs (fit plus partial_fit) used by :meth:`recommend`."""
        return self._seen

    # ------------------------------------------------------------------ Spark views

    @property
    def userFactors(self) -> Any:  # noqa: N802 - MLlib name
        """User factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Needs an active SparkSession.

        Examples
        --------
        >>> model.userFactors.where("id = '196'").show()
        """
        return self._factors_df(self.user_ids, self.user_vecs, self.user_bias, self.user_count)

    @property
    def itemFactors(self) -> Any:  # noqa: N802 - MLlib name
        """Item factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Examples
        --------
        >>> model.itemFactors.orderBy("count", ascending=False).limit(5).show()
        """
        return self._factors_df(self.item_ids, self.item_vecs, self.item_bias, self.item_count)

    def _factors_df(self, ids: np.ndarray, vec: np.ndarray, bias: np.ndarray, count: np.ndarray) -> Any:
        import pyarrow as pa

        spark = _active_spark()
        n = len(ids)
        offsets = pa.array(np.arange(0, (n + 1) * self.rank, self.rank, dtype=np.int32))
        table = pa.table({C.ID: pa.array(ids.tolist(), pa.string()),
                          C.VEC: pa.ListArray.from_arrays(offsets, pa.array(vec.reshape(-1), pa.float32())),
                          C.BIAS: pa.array(bias, pa.float32()), C.COUNT: pa.array(count, pa.int64())})
        return spark.createDataFrame(table.to_pandas(),
                                     schema=f"{C.ID} string, {C.VEC} array<float>, {C.BIAS} float, {C.COUNT} long")

    # ------------------------------------------------------------------ scoring

    def _rows(self, ids: Any, side: str) -> np.ndarray:
        index = self._user_index if side == "u" else self._item_index
        keys = _ids_to_str(pd.Series(np.asarray(ids, dtype=object) if not isinstance(ids, pd.Series) else ids),
                           "users" if side == "u" else "items")
        return index.get_indexer(keys.to_numpy(object))

    def _score_rows(self, ur: np.ndarray, ir: np.ndarray) -> np.ndarray:
        """float64 predictions for known rows (no -1 allowed)."""
        dot = np.einsum("ij,ij->i", self.user_vecs[ur].astype(np.float64), self.item_vecs[ir].astype(np.float64))
        if self.params["use_bias"]:
            dot += self.user_bias[ur].astype(np.float64) + self.item_bias[ir].astype(np.float64)
        return dot + (self.mu if self.kind == "explicit" else 0.0)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Scores of aligned ``(user, item)`` pairs; NaN where the user or the item is unknown.

        Explicit: ``mu + b_u + b_i + p_u.q_i``. Implicit: ``p_u.q_i`` (plus ``b_u + b_i`` when the
        model learnt biases). Computed in float64 from the float32 factors.

        Parameters
        ----------
        users, items : array-like of ids (int or str), same length

        Examples
        --------
        >>> model.predict(["196", "186"], [242, 302])
        array([3.9..., 3.5...])
        """
        ur, ir = self._rows(users, "u"), self._rows(items, "i")
        if ur.shape != ir.shape:
            raise ValueError(f"predict: users and items must have the same length, got {ur.shape[0]} and "
                             f"{ir.shape[0]}")
        out = np.full(ur.shape[0], np.nan, np.float64)
        ok = (ur >= 0) & (ir >= 0)
        out[ok] = self._score_rows(ur[ok], ir[ok])
        return out

    def transform(self, df: Any, *, cold_start_strategy: str | None = None) -> Any:
        """``df`` with a ``prediction`` (double) column, computed from its user and item columns.

        Parameters
        ----------
        df : pyspark.sql.DataFrame or pandas.DataFrame
            Needs the estimator's ``user_col`` and ``item_col`` (int or string ids).
        cold_start_strategy : str, optional
            ``"nan"`` (unknown user or item: NaN) or ``"drop"`` (remove those rows); defaults to the
            estimator's ``cold_start_strategy``.

        Examples
        --------
        >>> model.transform(test_sdf).select("user", "item", "rating", "prediction").show(3)
        """
        strategy = cold_start_strategy or self.params.get("cold_start_strategy", "nan")
        if strategy not in COLD_START_STRATEGIES:
            raise ValueError(f"transform: cold_start_strategy={strategy!r} is not supported; allowed values: "
                             f"{', '.join(repr(s) for s in COLD_START_STRATEGIES)}")
        ucol, icol = self.params["user_col"], self.params["item_col"]
        if isinstance(df, pd.DataFrame):
            missing = [c for c in (ucol, icol) if c not in df.columns]
            if missing:
                raise ValueError(f"transform: the DataFrame lacks column(s) {', '.join(missing)}")
            out = df.copy()
            out[PREDICTION] = self.predict(df[ucol], df[icol])
            return out[out[PREDICTION].notna()].copy() if strategy == "drop" else out
        if not _is_spark_df(df):
            raise ValueError(f"transform: df must be a pyspark.sql.DataFrame or pandas.DataFrame, got "
                             f"{type(df).__name__}")
        return self._transform_spark(df, strategy)

    def _transform_spark(self, df: Any, strategy: str) -> Any:
        from pyspark.sql import functions as F

        ucol, icol = self.params["user_col"], self.params["item_col"]
        missing = [c for c in (ucol, icol) if c not in df.columns]
        if missing:
            raise ValueError(f"transform: the DataFrame lacks column(s) {', '.join(missing)}")
        types = dict(df.dtypes)
        uf = self.userFactors.select(F.col(C.ID).alias("__u"), F.col(C.VEC).alias("__uv"),
                                     F.col(C.BIAS).alias("__ub"))
        itf = self.itemFactors.select(F.col(C.ID).alias("__i"), F.col(C.VEC).alias("__iv"),
                                      F.col(C.BIAS).alias("__ib"))
        how = "inner" if strategy == "drop" else "left"
        j = (df.withColumn("__uk", _spark_id(df, ucol, types)).withColumn("__ik", _spark_id(df, icol, types))
             .join(F.broadcast(uf), F.col("__uk") == F.col("__u"), how)
             .join(F.broadcast(itf), F.col("__ik") == F.col("__i"), how))
        dot = F.aggregate(F.zip_with("__uv", "__iv", lambda x, y: x.cast("double") * y.cast("double")),
                          F.lit(0.0).cast("double"), lambda acc, x: acc + x)
        pred = dot
        if self.params["use_bias"]:
            pred = pred + F.col("__ub").cast("double") + F.col("__ib").cast("double")
        if self.kind == "explicit":
            pred = pred + F.lit(self.mu)
        pred = F.when(F.col("__u").isNull() | F.col("__i").isNull(), F.lit(float("nan"))).otherwise(pred)
        return j.withColumn(PREDICTION, pred).select(*df.columns, PREDICTION)

    # ------------------------------------------------------------------ evaluation

    def _eval_pairs(self, df: Any) -> tuple[np.ndarray, np.ndarray]:
        ucol, icol, rcol = self.params["user_col"], self.params["item_col"], self.params["rating_col"]
        if _is_spark_df(df):
            df = df.select(ucol, icol, rcol).toPandas()
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"df must be a pandas or Spark DataFrame, got {type(df).__name__}")
        if rcol not in df.columns:
            raise ValueError(f"the DataFrame lacks the rating column {rcol!r}")
        pred = self.predict(df[ucol], df[icol])
        actual = df[rcol].to_numpy(np.float64)
        ok = ~np.isnan(pred)
        return pred[ok], actual[ok]

    def rmse(self, df: Any) -> float:
        """Root mean squared error of :meth:`predict` on ``df``'s ratings, over rows whose user and item
        are known (cold rows are dropped, like MLlib's ``coldStartStrategy="drop"``).

        Examples
        --------
        >>> model.rmse(test_pdf)
        0.93...
        """
        from dsgd.metrics import rmse

        return rmse(*self._eval_pairs(df))

    def mae(self, df: Any) -> float:
        """Mean absolute error of :meth:`predict` on ``df``'s ratings (cold rows dropped).

        Examples
        --------
        >>> model.mae(test_pdf)
        0.73...
        """
        from dsgd.metrics import mae

        return mae(*self._eval_pairs(df))

    # ------------------------------------------------------------------ recommendation

    def recommend(self, users: Any, k: int = 10, *, exclude_seen: bool = True, seen: Any = None,
                  chunk: int = 2048) -> pd.DataFrame:
        """Top-``k`` items per user, best first.

        Parameters
        ----------
        users : array-like of ids
            Duplicates are answered once, in first-appearance order.
        k : int, default 10
            List length (>= 1); a list is shorter when fewer candidate items remain.
        exclude_seen : bool, default True
            Remove each user's seen items from the candidates.
        seen : pandas or Spark DataFrame with the user and item columns, optional
            The interactions to exclude; default: the training interactions (:attr:`seen`).
        chunk : int
            Users scored at once (memory is ``chunk * n_items`` floats); the result does not depend on it.

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``rank`` (1-based), ``item``, ``score``, sorted by request order then rank.
            Known users are scored by :meth:`predict`; unknown (cold) users get the most popular items
            (:meth:`item_popularity`, ties by item id) with that count as ``score``, seen items still filtered.
            Ties between scores are broken by item id.

        Examples
        --------
        >>> model.recommend(["196", "new-user"], k=3)
               user  rank item     score
        0       196     1  408  4.61...
        ...
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"recommend: k must be an int >= 1, got {k!r}")
        if chunk < 1:
            raise ValueError(f"recommend: chunk must be >= 1, got {chunk!r}")
        req = pd.Index(_ids_to_str(pd.Series(np.asarray(users, dtype=object)), "users").to_numpy(object)).unique()
        n_items = len(self.item_ids)
        k = int(min(k, n_items))
        seen_rows: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if exclude_seen:
            s = self._seen if seen is None else self._seen_frame(seen)
            r = req.get_indexer(s[C.USER].to_numpy(object))
            it = self._item_index.get_indexer(s[C.ITEM].to_numpy(object))
            ok = (r >= 0) & (it >= 0)
            seen_rows = (r[ok].astype(np.int64), it[ok].astype(np.int64))
        urows = self._user_index.get_indexer(req.to_numpy(object))
        pop = self.item_popularity().astype(np.float64)
        out_u, out_rank, out_i, out_s = [], [], [], []
        order_pos = np.argsort(seen_rows[0], kind="stable")
        sr_u, sr_i = seen_rows[0][order_pos], seen_rows[1][order_pos]
        for lo in range(0, len(req), chunk):
            hi = min(lo + chunk, len(req))
            ur = urows[lo:hi]
            known = ur >= 0
            scores = np.broadcast_to(pop, (hi - lo, n_items)).copy()
            if known.any():
                scores[known] = self._score_matrix(ur[known])
            a, b = np.searchsorted(sr_u, lo), np.searchsorted(sr_u, hi)
            scores[sr_u[a:b] - lo, sr_i[a:b]] = -np.inf
            for row in range(hi - lo):
                if k == 0:
                    break
                sc = scores[row]
                cand = np.argpartition(-sc, k - 1)[:k] if k < n_items else np.arange(n_items)
                # exact top-k with ties by item id: take everything scoring >= the k-th best
                kth = sc[cand].min()
                cand = np.flatnonzero(sc >= kth)
                cand = cand[np.lexsort((cand, -sc[cand]))][:k]
                cand = cand[np.isfinite(sc[cand])]
                out_u.extend([req[lo + row]] * len(cand))
                out_rank.extend(range(1, len(cand) + 1))
                out_i.extend(self.item_ids[cand].tolist())
                out_s.extend(sc[cand].tolist())
        return pd.DataFrame({"user": pd.Series(out_u, dtype=object), "rank": np.asarray(out_rank, np.int64),
                             "item": pd.Series(out_i, dtype=object), "score": np.asarray(out_s, np.float64)})

    def _score_matrix(self, ur: np.ndarray) -> np.ndarray:
        s = self.user_vecs[ur].astype(np.float64) @ self.item_vecs.astype(np.float64).T
        if self.params["use_bias"]:
            s += self.user_bias[ur].astype(np.float64)[:, None] + self.item_bias.astype(np.float64)[None, :]
        if self.kind == "explicit":
            s += self.mu
        return s

    def _seen_frame(self, seen: Any) -> pd.DataFrame:
        ucol, icol = self.params["user_col"], self.params["item_col"]
        if _is_spark_df(seen):
            seen = seen.select(ucol, icol).toPandas()
        if not isinstance(seen, pd.DataFrame) or ucol not in seen.columns or icol not in seen.columns:
            raise ValueError(f"recommend: seen must be a pandas or Spark DataFrame with columns {ucol!r} and "
                             f"{icol!r}")
        return pd.DataFrame({C.USER: _ids_to_str(seen[ucol], ucol), C.ITEM: _ids_to_str(seen[icol], icol)})

    def item_popularity(self) -> np.ndarray:
        """Distinct training users per item (aligned with :attr:`item_ids`): the cold-user fallback order.

        (``item_count`` counts SGD updates, which grow with ``epochs``; this does not.)

        Examples
        --------
        >>> model.item_ids[np.argsort(-model.item_popularity(), kind="stable")[:3]]
        """
        if self._popularity is None:
            rows = self._item_index.get_indexer(self._seen[C.ITEM].to_numpy(object))
            self._popularity = np.bincount(rows[rows >= 0], minlength=len(self.item_ids)).astype(np.int64)
        return self._popularity

    def recommend_for_all(self, k: int = 10, *, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for every known user (see :meth:`recommend`).

        Examples
        --------
        >>> model.recommend_for_all(10).head()
          user  rank  item     score
        """
        return self.recommend(self.user_ids, k, exclude_seen=exclude_seen)

    # ------------------------------------------------------------------ incremental training

    def _train_local(self, ev: pd.DataFrame, *, batch_id: int, epochs: int, schedule: Schedule) -> list[dict]:
        p = self.params
        users = self._side_factors("u")
        items = self._side_factors("i")
        u_ids, u_keys = _ids_and_keys(ev[C.USER])
        i_ids, i_keys = _ids_and_keys(ev[C.ITEM])
        est_params = KernelParams(lr=p["lr"], reg=p["reg"], mu=self.mu if self.kind == "explicit" else 0.0,
                                  implicit=self.kind == "implicit", use_bias=p["use_bias"],
                                  negatives=p["negatives"] if self.kind == "implicit" else 0,
                                  negative_sampling=p["negative_sampling"])
        stats = train_epochs(users, items, u_keys, i_keys, u_ids, i_ids, ev[C.RATING].to_numpy(np.float32),
                             ev[C.TS].to_numpy(np.int64), ev[C.SEQ].to_numpy(np.int64), est_params,
                             d=p["blocks"], epochs=epochs, schedule=schedule, strata_order=p["strata_order"],
                             seed=p["seed"], batch_id=batch_id, init_scale=p["init_scale"], rank=self.rank,
                             threads=2)
        self._set_side("u", (users.ids, users.vec, users.bias, users.count))
        self._set_side("i", (items.ids, items.vec, items.bias, items.count))
        return stats

    def _side_factors(self, side: str) -> SideFactors:
        ids, vec, bias, count = ((self.user_ids, self.user_vecs, self.user_bias, self.user_count) if side == "u"
                                 else (self.item_ids, self.item_vecs, self.item_bias, self.item_count))
        return SideFactors(id_key(ids) if len(ids) else np.zeros(0, np.int64), ids.copy(), vec.copy(),
                           bias.copy(), count.copy())

    def partial_fit(self, events: Any, *, batch_id: int, epochs: int | None = None,
                    schedule: Schedule | None = None) -> list[dict]:
        """Train on more events starting from the current factors (local engine, in place).

        New ids get their deterministic initial vectors; ``mu`` is kept. Seeds derive from
        ``(seed, batch_id)`` exactly as in :func:`dsgd.local.train_epochs`, so replaying a batch with the
        same ``batch_id`` on the same model gives the same factors.

        Parameters
        ----------
        events : pandas or Spark DataFrame
            Same columns as for :meth:`DSGD.fit`.
        batch_id : int
            Identifies the batch (>= 0); ``fit`` used 0.
        epochs : int, optional
            Epochs over these events; default: the estimator's ``epochs``.
        schedule : Schedule, optional
            Learning-rate schedule to use (and update); default: a fresh one from ``lr``/``lr_schedule``.

        Returns
        -------
        list of dict
            Per-epoch stats (also appended to :attr:`history` with a ``batch_id`` key).

        Examples
        --------
        >>> stats = model.partial_fit(new_events_pdf, batch_id=1, epochs=1)
        >>> stats[0]["updates"]
        1000
        """
        if isinstance(batch_id, bool) or not isinstance(batch_id, int | np.integer) or batch_id < 0:
            raise ValueError(f"partial_fit: batch_id must be an int >= 0, got {batch_id!r}")
        epochs = self.params["epochs"] if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"partial_fit: epochs must be an int >= 1, got {epochs!r}")
        est = self.estimator()
        if _is_spark_df(events):
            ev = _normalise_pandas_types(est._prepare_spark(events).toPandas())
        elif isinstance(events, pd.DataFrame):
            ev = est._prepare_pandas(events)
        else:
            raise ValueError(f"partial_fit: events must be a pandas or Spark DataFrame, got {type(events).__name__}")
        if len(ev) == 0:
            return []
        sched = schedule if schedule is not None else est.make_schedule()
        stats = self._train_local(ev, batch_id=int(batch_id), epochs=int(epochs), schedule=sched)
        self.history.extend({**s, "batch_id": int(batch_id)} for s in stats)
        self._set_seen(_distinct_pairs(pd.concat([self._seen, ev[[C.USER, C.ITEM]]], ignore_index=True)))
        return stats

    def estimator(self) -> DSGD:
        """A :class:`DSGD` with this model's parameters.

        Examples
        --------
        >>> model.estimator().rank == model.rank
        True
        """
        p = dict(self.params)
        if p["kind"] == "explicit":
            p["use_bias"] = None
        return DSGD(**p)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the model to a folder: ``model.json`` (params, mu, history), ``users.parquet``,
        ``items.parquet`` (id, vec, bias, count) and ``seen.parquet``. Overwrites existing files.

        Examples
        --------
        >>> model.save("/tmp/m1"); DSGDModel.load("/tmp/m1").rank
        10
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": _FORMAT_VERSION, "params": self.params, "mu": self.mu, "engine": self.engine,
                "history": self.history}
        for side, (ids, vec, bias, count) in (
                ("users", (self.user_ids, self.user_vecs, self.user_bias, self.user_count)),
                ("items", (self.item_ids, self.item_vecs, self.item_bias, self.item_count))):
            n = len(ids)
            offsets = pa.array(np.arange(0, (n + 1) * self.rank, self.rank, dtype=np.int32))
            pq.write_table(pa.table({C.ID: pa.array(ids.tolist(), pa.string()),
                                     C.VEC: pa.ListArray.from_arrays(offsets, pa.array(vec.reshape(-1), pa.float32())),
                                     C.BIAS: pa.array(bias, pa.float32()), C.COUNT: pa.array(count, pa.int64())}),
                           folder / f"{side}.parquet")
        pq.write_table(pa.table({C.USER: pa.array(self._seen[C.USER].tolist(), pa.string()),
                                 C.ITEM: pa.array(self._seen[C.ITEM].tolist(), pa.string())}),
                       folder / "seen.parquet")
        (folder / "model.json").write_text(json.dumps(meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, path: str | Path) -> DSGDModel:
        """Read a model written by :meth:`save`.

        Examples
        --------
        >>> model = DSGDModel.load("/tmp/m1")
        """
        import pyarrow.parquet as pq

        folder = Path(path)
        if not (folder / "model.json").is_file():
            raise FileNotFoundError(f"DSGDModel.load: {folder} holds no model.json (not a saved DSGDModel)")
        meta = json.loads((folder / "model.json").read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"DSGDModel.load: unsupported format_version {meta.get('format_version')!r}")
        rank = int(meta["params"]["rank"])
        sides = []
        for side in ("users", "items"):
            t = pq.read_table(folder / f"{side}.parquet")
            n = t.num_rows
            vec = t.column(C.VEC).combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            sides.append((np.asarray(t.column(C.ID).to_pylist(), dtype=object), vec.reshape(n, rank),
                          t.column(C.BIAS).to_numpy().astype(np.float32), t.column(C.COUNT).to_numpy().astype(np.int64)))
        seen = pq.read_table(folder / "seen.parquet").to_pandas().astype(object)
        return cls(params=meta["params"], mu=meta["mu"], engine=meta["engine"], users=sides[0], items=sides[1],
                   history=meta["history"], seen=seen)


# --------------------------------------------------------------------------- helpers


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _is_spark_df(obj: Any) -> bool:
    try:
        from pyspark.sql import DataFrame
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, DataFrame)


def _active_spark() -> Any:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("no active SparkSession: userFactors/itemFactors/transform need one "
                           "(dsgd.session.build_session)")
    return spark


_INT_SPARK = ("tinyint", "smallint", "int", "bigint")


def _spark_id(df: Any, name: str, types: dict[str, str]) -> Any:
    from pyspark.sql import functions as F

    t = types[name]
    if t == "string":
        return F.col(name)
    if t in _INT_SPARK:
        return F.col(name).cast("long").cast("string")
    raise ValueError(f"id column {name!r} must be an integer or string column, got {t}")


def _ids_to_str(s: pd.Series, name: str) -> pd.Series:
    """Ids as Python str: integers through ``str(int)``, strings unchanged."""
    if pd.api.types.is_integer_dtype(s.dtype):
        return pd.Series(s.to_numpy(np.int64).astype(str).astype(object), index=s.index)
    if pd.api.types.is_float_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        raise ValueError(f"id column {name!r} must hold integers or strings, got dtype {s.dtype} (a float id "
                         "column usually means nulls in an integer column: drop them and cast to int)")
    vals = s.to_numpy(object)
    out = np.empty(len(vals), dtype=object)
    for n, v in enumerate(vals):
        if v is None or (isinstance(v, float) and v != v):
            out[n] = None
        elif isinstance(v, str):
            out[n] = v
        elif isinstance(v, int | np.integer) and not isinstance(v, bool):
            out[n] = str(int(v))
        else:
            raise ValueError(f"id column {name!r} must hold integers or strings, got {v!r} ({type(v).__name__})")
    return pd.Series(out, index=s.index, dtype=object)


def _ts_to_ms(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return (s.astype("datetime64[ns]").to_numpy().astype(np.int64) // 1_000_000).astype(np.int64)
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(np.int64)
    raise ValueError(f"time column must be integer epoch ms or datetime64, got dtype {s.dtype}")


def _derived_seq(ev: pd.DataFrame) -> np.ndarray:
    """Position of each event in (ts, user, item, rating) order: as Spark's row_number in _prepare_spark."""
    r = ev[C.RATING].to_numpy(np.float64)
    order = np.lexsort((np.where(np.isnan(r), np.inf, r), ev[C.ITEM].to_numpy(object).astype(str),
                        ev[C.USER].to_numpy(object).astype(str), ev[C.TS].to_numpy(np.int64)))
    seq = np.empty(len(ev), np.int64)
    seq[order] = np.arange(len(ev), dtype=np.int64)
    return seq


def _normalise_pandas_types(pdf: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({C.USER: pdf[C.USER].astype(object), C.ITEM: pdf[C.ITEM].astype(object),
                        C.RATING: pd.to_numeric(pdf[C.RATING]).astype(np.float32).to_numpy(),
                        C.TS: pdf[C.TS].to_numpy(np.int64), C.SEQ: pdf[C.SEQ].to_numpy(np.int64)})
    return out


def _mean_rating(r: np.ndarray) -> float:
    """Mean rating in float64 (exact sum for the usual ratings, so both engines agree)."""
    return math.fsum(np.asarray(r, np.float64).tolist()) / len(r)


def _ids_and_keys(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ids (object array) and their XXH64 keys, hashing each distinct id once."""
    codes, uniq = pd.factorize(ids.to_numpy(object))
    return ids.to_numpy(object), id_key(list(uniq))[codes]


def _distinct_pairs(ev: pd.DataFrame) -> pd.DataFrame:
    return ev[[C.USER, C.ITEM]].drop_duplicates(ignore_index=True).astype(object)


def _factor_rows_to_side(pdf: pd.DataFrame, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(pdf)
    vec = np.stack(pdf[C.VEC].to_numpy()).astype(np.float32) if n else np.zeros((0, rank), np.float32)
    return (pdf[C.ID].to_numpy(object), vec.reshape(n, rank), pdf[C.BIAS].to_numpy(np.float32),
            pdf[C.COUNT].to_numpy(np.int64))
