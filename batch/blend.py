"""Blend a batch model into the live ``factors`` table, safely next to the running stream.

Policies (``retrain.policy``):

``replace``
    live factors := the ALS snapshot, then the events after the cut-off are replayed through the DSGD
    step (same kernel, parameters and engine as the stream), so nothing learnt since the cut-off is lost.
``warm-start``
    the batch model is ``retrain.warm_start_epochs`` DSGD epochs over the history up to the cut-off,
    starting from the online factors (see :func:`warm_start_model`); it replaces the live factors.
``score-blend``
    the live factors stay; serving scores ``alpha * batch + (1 - alpha) * online``
    (:mod:`batch.serving`); only the model metadata moves (snapshot id, alpha).

The swap is ONE model commit of the factor store (an append of row versions, see
:mod:`dsgd.store.factor_store`) that is a compare-and-swap on the model sequence:

1. the batch model is computed against the live table at version ``v`` (its *base*);
2. just before the swap the current head is read; rows the stream changed since ``v`` are **rebased**:
   ``new = batch + (now - base)`` (the stream's update is applied on top of the batch model; ids new
   since ``v`` keep the stream's row), and ``mu``/``n_ratings`` likewise;
3. the commit appends the rows and the metadata as the next model sequence; if another writer (the
   stream) committed that sequence first, Delta skips or fails it (:class:`StaleModel`) and steps 2-3
   are retried (``retrain.swap_retries``).

So a streaming batch commits either before the swap (its update is rebased onto the batch model) or
after it (its commit lands on the swapped model); no update is lost.

Example
-------
>>> result = swap(spark, store, users, items, base_version=v, meta={"blend_policy": "replace"},
...               retries=20)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.config import Config
from dsgd.core.factors import SideFactors
from dsgd.core.params import KernelParams, params_from_model_config
from dsgd.core.schedules import make_schedule
from dsgd.engines.als import replay_seed
from dsgd.engines.local import train_epochs
from dsgd.engines.spark import side_to_spark
from dsgd.store.errors import StaleModel
from dsgd.store.factor_store import FactorStore, ModelHead

log = logging.getLogger("dsgd.batch")

FACTOR_COLS = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT]
__all__ = ["FACTOR_COLS", "dsgd_epochs", "kernel_params", "replace_model", "replay_seed", "swap",
           "warm_start_model"]


@dataclass
class SwapResult:
    """What a swap did: the factors version it produced, attempts, rows rebased onto the stream's updates."""

    version: int
    attempts: int
    rows_written: int = 0
    rows_rebased: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# ---- DSGD over a set of events, starting from given factors ----------------------------------------------
def kernel_params(cfg: Config, *, lr: float, mu: float) -> KernelParams:
    """The stream's kernel parameters (:class:`streaming.trainer.StreamTrainer`) with ``lr`` and ``mu``."""
    return params_from_model_config(cfg.model, mu=mu, lr=lr)


def dsgd_epochs(spark: SparkSession, cfg: Config, events: DataFrame, users: DataFrame, items: DataFrame, *,
                epochs: int, lr: float, mu: float, batch_id: int) -> tuple[DataFrame, DataFrame, list[dict]]:
    """Stratified DSGD of ``events`` starting from ``users``/``items`` (FACTOR_SCHEMA), all rows returned.

    Runs on the engine of ``model.engine`` (``local``: driver threads; ``spark``: mapInArrow) with the
    stream's parameters; new ids get the deterministic initial vector of their key. ``batch_id`` seeds
    the strata and the negatives. Returns every user row, every item row (FACTOR_SCHEMA) and per-epoch stats.

    Example
    -------
    >>> u, i, stats = dsgd_epochs(spark, cfg, after_cutoff, snap_users, snap_items, epochs=1, lr=0.05,
    ...                           mu=3.5, batch_id=7)
    """
    m = cfg.model
    params = kernel_params(cfg, lr=lr, mu=mu)
    schedule = make_schedule(m.lr_schedule, lr) if lr > 0 else make_schedule("constant", 1e-12)
    if epochs == 0 or lr == 0:
        params = kernel_params(cfg, lr=0.0, mu=mu)
    ev = events.select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ)
    if m.engine == "local":
        pev = ev.toPandas()
        su = SideFactors.from_frame(users.select(*FACTOR_COLS).toPandas(), m.rank)
        si = SideFactors.from_frame(items.select(*FACTOR_COLS).toPandas(), m.rank)
        from dsgd.core.hashing import id_key

        uids, iids = pev[C.USER].to_numpy(object), pev[C.ITEM].to_numpy(object)
        stats = train_epochs(su, si, id_key(uids), id_key(iids), uids, iids,
                             pev[C.RATING].fillna(1.0).to_numpy(np.float32), pev[C.TS].to_numpy(np.int64),
                             pev[C.SEQ].to_numpy(np.int64), params, d=m.blocks, epochs=epochs, schedule=schedule,
                             strata_order=m.strata_order, seed=m.seed, batch_id=batch_id, init_scale=m.init_scale,
                             rank=m.rank, threads=2)
        return side_to_spark(spark, su), side_to_spark(spark, si), stats
    from dsgd.engines.spark import ensure_ids, train_epochs_spark

    fu = ensure_ids(users.select(*FACTOR_COLS), ev.select(F.col(C.USER).alias(C.ID)))
    fi = ensure_ids(items.select(*FACTOR_COLS), ev.select(F.col(C.ITEM).alias(C.ID)))
    ou, oi, stats = train_epochs_spark(spark, ev, fu, fi, params, d=m.blocks, epochs=epochs, schedule=schedule,
                                       strata_order=m.strata_order, seed=m.seed, batch_id=batch_id,
                                       init_scale=m.init_scale, rank=m.rank, exchange=m.spark_exchange)
    return ou.select(*FACTOR_COLS), oi.select(*FACTOR_COLS), stats


# ---- policies --------------------------------------------------------------------------------------------
def replace_model(spark: SparkSession, cfg: Config, snap_users: DataFrame, snap_items: DataFrame,
                  after_cutoff: DataFrame, *, mu: float, n_ratings: int, as_of_ms: int
                  ) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """The ``replace`` model: the snapshot, then the events after the cut-off replayed through DSGD.

    ``mu``/``n_ratings`` are the snapshot's global mean and rating count; for explicit models the
    replay's ratings extend the running mean like the stream does. Returns users, items and the
    metadata keys (``mu``, ``n_ratings``, ``replayed_events``, ``replay_loss``).

    Example
    -------
    >>> users, items, meta = replace_model(spark, cfg, su, si, events_after, mu=3.5, n_ratings=9000,
    ...                                    as_of_ms=1_700_000_000_000)
    """
    ev = after_cutoff.select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ).localCheckpoint()
    agg = ev.agg(F.count(F.lit(1)).alias("n"), F.sum(C.RATING).alias("s")).first()
    n_new = int(agg["n"])
    explicit = cfg.model.kind == "explicit"
    if explicit and n_new:
        mu = (mu * n_ratings + float(agg["s"] or 0.0)) / (n_ratings + n_new)
    meta: dict[str, Any] = {"mu": mu if explicit else 0.0, "n_ratings": n_ratings + n_new, "replayed_events": n_new}
    if n_new == 0:
        return snap_users, snap_items, meta
    users, items, stats = dsgd_epochs(spark, cfg, ev, snap_users, snap_items, epochs=cfg.model.epochs,
                                      lr=cfg.model.lr, mu=mu, batch_id=replay_seed(as_of_ms))
    meta["replay_loss"] = float(np.nanmean([s["loss"] for s in stats])) if stats else float("nan")
    return users, items, meta


def warm_start_model(spark: SparkSession, cfg: Config, live_users: DataFrame, live_items: DataFrame,
                     history: DataFrame, *, epochs: int, lr: float, mu: float, as_of_ms: int
                     ) -> tuple[DataFrame, DataFrame, list[dict]]:
    """The ``warm-start`` model: ``epochs`` DSGD epochs over ``history`` from the online factors.

    Counts (item popularity) are kept as the stream left them: the history was counted once already.

    Example
    -------
    >>> users, items, stats = warm_start_model(spark, cfg, lu, li, history, epochs=3, lr=0.05, mu=0.0,
    ...                                        as_of_ms=as_of)
    """
    users, items, stats = dsgd_epochs(spark, cfg, history, live_users, live_items, epochs=epochs, lr=lr, mu=mu,
                                      batch_id=replay_seed(as_of_ms))

    def keep_counts(new: DataFrame, old: DataFrame) -> DataFrame:
        oc = old.select(C.ID, F.col(C.COUNT).alias("_c"))
        return (new.join(oc, C.ID, "left").withColumn(C.COUNT, F.coalesce("_c", F.lit(0)).cast("long"))
                .select(*FACTOR_COLS))

    return keep_counts(users, live_users), keep_counts(items, live_items), stats


# ---- the swap --------------------------------------------------------------------------------------------
def _vec_add(a: str, b: str, c: str) -> F.Column:
    """a + (b - c), element-wise on array<float> columns."""
    return F.expr(f"zip_with(zip_with({a}, {b}, (x, y) -> x + y), {c}, (x, y) -> cast(x - y AS float))")


def rebase(store: FactorStore, model: DataFrame, base_version: int, now_version: int | None = None) -> DataFrame:
    """Rows to write (column ``side`` + FACTOR_SCHEMA + ``_rebased``): the batch model ``model``
    (``side`` + FACTOR_SCHEMA, both sides), with the stream's changes since ``base_version`` added.

    - (side, id) changed by the stream since the base and present in the model and the base:
      ``model + (now - base)`` (vec, bias and count);
    - changed by the stream and new since the base, or absent from the model: the stream's row;
    - otherwise the model's row.
    """
    cols = [C.SIDE, *FACTOR_COLS]
    facts = F.col(C.SIDE) != C.SIDE_META
    now = store.current(now_version).where(facts).select(*[F.col(c).alias(f"n_{c}") for c in cols])
    base = store.current(base_version).where(facts).select(*[F.col(c).alias(f"b_{c}") for c in cols])
    changed = (now.join(base, (F.col("n_side") == F.col("b_side")) & (F.col("n_id") == F.col("b_id")), "left")
               .where(F.col("b_id").isNull() | (F.col("n_vec") != F.col("b_vec"))
                      | ~F.col("n_bias").eqNullSafe(F.col("b_bias")) | (F.col("n_count") != F.col("b_count"))))
    m = model.select(*[F.col(c).alias(f"m_{c}") for c in cols])
    j = m.join(changed, (F.col("m_side") == F.col("n_side")) & (F.col("m_id") == F.col("n_id")), "full_outer")
    both = F.col("m_id").isNotNull() & F.col("n_id").isNotNull() & F.col("b_id").isNotNull()
    only_stream = F.col("m_id").isNull() | (F.col("n_id").isNotNull() & F.col("b_id").isNull())
    return j.select(
        F.coalesce("m_side", "n_side").alias(C.SIDE),
        F.coalesce("m_id", "n_id").alias(C.ID),
        F.coalesce("m_key", "n_key").alias(C.KEY),
        F.when(both, _vec_add("m_vec", "n_vec", "b_vec")).when(only_stream, F.col("n_vec"))
        .otherwise(F.col("m_vec")).alias(C.VEC),
        F.when(both, (F.col("m_bias") + F.col("n_bias") - F.col("b_bias")).cast("float"))
        .when(only_stream, F.col("n_bias")).otherwise(F.col("m_bias")).alias(C.BIAS),
        F.when(both, F.col("m_count") + F.col("n_count") - F.col("b_count"))
        .when(only_stream, F.col("n_count")).otherwise(F.col("m_count")).cast("long").alias(C.COUNT),
        both.alias("_rebased"))


def rebase_meta(now: dict[str, Any], base: dict[str, Any], model_mu: float | None, model_n: int | None
                ) -> dict[str, Any]:
    """``mu``/``n_ratings`` of the batch model plus what the stream added since the base."""
    if model_mu is None or model_n is None:
        return {}
    dn = int(now.get("n_ratings", 0)) - int(base.get("n_ratings", 0))
    ds = float(now.get("mu", 0.0)) * int(now.get("n_ratings", 0)) - float(base.get("mu", 0.0)) * int(
        base.get("n_ratings", 0))
    n = model_n + dn
    mu = (model_mu * model_n + ds) / n if n > 0 else model_mu
    return {"mu": mu, "n_ratings": n}


def swap(spark: SparkSession, store: FactorStore, users: DataFrame | None, items: DataFrame | None, *,
         base_version: int, meta: dict[str, Any], model_mu: float | None = None, model_n: int | None = None,
         retries: int = 20) -> SwapResult:
    """Atomically install the batch model ``users``/``items`` (computed against ``base_version``).

    ``users``/``items`` None: only the metadata moves (score-blend). ``meta`` keys are merged into the
    current metadata (``last_batch`` and the stream's keys are kept). Returns the new factors version.

    Example
    -------
    >>> swap(spark, store, users, items, base_version=12, meta={"blend_policy": "replace"}, model_mu=3.5,
    ...      model_n=90000)
    """
    t0 = time.perf_counter()
    base_meta = store.meta(base_version)
    model = None
    if users is not None and items is not None:
        model = (users.select(F.lit(C.SIDE_USER).alias(C.SIDE), *FACTOR_COLS)
                 .unionByName(items.select(F.lit(C.SIDE_ITEM).alias(C.SIDE), *FACTOR_COLS)))

    def attempt(head: ModelHead, n: int) -> SwapResult:
        now_meta = head.meta
        new_meta = {**now_meta, **meta, **rebase_meta(now_meta, base_meta, model_mu, model_n)}
        rows = None
        rebased = written = 0
        if model is not None:
            rows = rebase(store, model, base_version, head.version).localCheckpoint()
            counts = rows.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("_rebased").cast("int")).alias("r")).first()
            written, rebased = int(counts["n"]), int(counts["r"] or 0)
            rows = rows.drop("_rebased")
        version = store.commit(rows, meta=new_meta, head=head, last_batch=int(now_meta.get("last_batch", -1)),
                               label="dsgd-swap").version
        log.info("swap committed factors version %d (attempt %d, %d rows, %d rebased onto stream updates)",
                 version, n, written, rebased)
        return SwapResult(version=version, attempts=n, rows_written=written, rows_rebased=rebased,
                          seconds=time.perf_counter() - t0)

    try:  # a lost race (the stream committed first) rebases onto the new model and tries again
        return store.retry_stale(attempt, retries=retries - 1, what="swap")
    except StaleModel as exc:
        raise RuntimeError(f"the swap did not commit after {retries} attempts (the stream kept committing); "
                           "raise retrain.swap_retries") from exc
