"""Stratified DSGD on Spark: per stratum, the d blocks run in parallel in Python workers.

:func:`train_epochs_spark` runs one of two exchanges: ``barrier`` (:mod:`dsgd.barrier_engine`, one
barrier stage for every epoch) or ``shuffle``, described here. For stratum ``s`` of epoch ``e``, the rows of a block ``(b, stratum[b])`` (its events, the factor rows of
user block ``b`` and of item block ``stratum[b]``) are tagged with ``blk = b`` and shuffled so that each
block lands in its own partition; ``mapInArrow`` hands each partition to the compiled kernel
(:func:`dsgd.kernel.run_block`) as Arrow arrays and gets back every factor row of the block. Since
every user block and every item block is in exactly one block of a stratum, a stratum's output is the
complete new factor set, which the next stratum consumes. The output of each stratum is
``localCheckpoint``-ed, so the plan never grows with the number of strata.

The result equals :func:`dsgd.local.train_epochs` on the same inputs (same strata, seeds, negative
pools and event order), which the tests assert.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd import columns as C
from dsgd.hashing import init_vectors, mix_seed
from dsgd.kernel import run_block
from dsgd.params import KernelParams
from dsgd.strata import strata_schedule

log = logging.getLogger(__name__)

#: How factors move between strata (see :func:`train_epochs_spark`).
EXCHANGES = ("auto", "barrier", "shuffle")

#: Factor rows exchanged with the engine: one side at a time.
FACTOR_SCHEMA = f"{C.ID} string, {C.KEY} long, {C.VEC} array<float>, {C.BIAS} float, {C.COUNT} long"

_KIND_EVENT, _KIND_USER, _KIND_ITEM, _KIND_STATS = 0, 1, 2, 3
_UNION_SCHEMA = (
    "blk int, pk int, kind tinyint, id string, key long, key2 long, rating float, ts long, seq long, "
    "vec array<float>, bias float, count long, changed boolean")
_OUT_SCHEMA = ("kind tinyint, id string, key long, vec array<float>, bias float, count long, changed boolean, "
               "sse double, n long")


def partition_keys(spark: SparkSession, d: int) -> list[int]:
    """For each block b, an int whose Spark hash partitioning into d partitions is partition b."""
    return list(_partition_keys_cached(spark.sparkContext.applicationId, d, spark))


@lru_cache(maxsize=64)
def _partition_keys_cached(_app: str, d: int, spark: SparkSession) -> tuple[int, ...]:
    rows = (spark.range(0, 64 * d + 64).select(F.col("id").cast("int").alias("v"))
            .select("v", F.expr(f"pmod(hash(v), {d})").alias("p"))
            .groupBy("p").agg(F.min("v").alias("v")).collect())
    found = {r.p: r.v for r in rows}
    if len(found) < d:
        raise RuntimeError(f"could not find partition keys for d={d}")
    return tuple(found[b] for b in range(d))


def with_keys(events: DataFrame, d: int) -> DataFrame:
    """Add user_key/item_key (xxhash64 of the id, as :func:`dsgd.hashing.id_key`) and their blocks."""
    return (events.withColumn(C.USER_KEY, F.xxhash64(F.col(C.USER)))
            .withColumn(C.ITEM_KEY, F.xxhash64(F.col(C.ITEM)))
            .withColumn("ub", F.expr(f"pmod({C.USER_KEY}, {d})").cast("int"))
            .withColumn("ib", F.expr(f"pmod({C.ITEM_KEY}, {d})").cast("int")))


def ensure_ids(factors: DataFrame, ids: DataFrame) -> DataFrame:
    """Factor rows for every id in ``ids`` (column ``id``): existing rows, plus new ones with a null vec
    (initialised deterministically from the id's key inside the kernel task)."""
    new = (ids.select(F.col(C.ID)).distinct().join(factors.select(C.ID), C.ID, "left_anti")
           .select(C.ID, F.xxhash64(C.ID).alias(C.KEY), F.lit(None).cast("array<float>").alias(C.VEC),
                   F.lit(0.0).cast("float").alias(C.BIAS), F.lit(0).cast("long").alias(C.COUNT)))
    return factors.select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT).unionByName(new)


def train_epochs_spark(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame,
                       params: KernelParams, *, d: int, epochs: int, schedule: Any, strata_order: str,
                       seed: int, batch_id: int, init_scale: float, rank: int, exchange: str = "auto",
                       n_items: int | None = None) -> tuple[DataFrame, DataFrame, list[dict]]:
    """Stratified DSGD of ``events`` starting from ``users``/``items`` factor rows (FACTOR_SCHEMA).

    Every id of ``events`` must be present in ``users``/``items`` (see :func:`ensure_ids`; a null
    ``vec`` marks a new id). Returns the new user rows, item rows (both FACTOR_SCHEMA plus a boolean
    ``changed``) and per-epoch stats like :func:`dsgd.local.train_epochs`.

    ``exchange`` says how factors move between strata. ``"barrier"``: one barrier stage runs every
    epoch, tasks keep their user blocks and swap item blocks (:mod:`dsgd.barrier_engine`; fast, needs
    the item factors in each task's memory). ``"shuffle"``: one stage per stratum, all factor rows
    shuffled and checkpointed between strata (this module; any size). ``"auto"``: barrier while the
    item factors take at most :data:`dsgd.barrier_engine.MAX_ITEM_BYTES` (``n_items`` if the caller
    knows it, else counted) and the session can run barrier stages. All give the same factors.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {', '.join(EXCHANGES)}; got {exchange!r}")
    if epochs > 0 and exchange != "shuffle":
        from dsgd.barrier_engine import MAX_ITEM_BYTES, barrier_usable, train_epochs_barrier

        why = barrier_usable(spark)
        if exchange == "barrier" and why:
            raise ValueError(f"exchange='barrier' cannot run here: {why}; use exchange='shuffle'")
        if exchange == "auto" and not why:
            n_items = items.count() if n_items is None else n_items
            size = n_items * (4 * rank + 24)
            why = (f"item factors take {size / 2**20:.0f} MB > {MAX_ITEM_BYTES / 2**20:.0f} MB"
                   if size > MAX_ITEM_BYTES else "")
        _announce(exchange, why)
        if not why:
            return train_epochs_barrier(spark, events, users, items, params, d=d, epochs=epochs,
                                        schedule=schedule, strata_order=strata_order, seed=seed,
                                        batch_id=batch_id, init_scale=init_scale, rank=rank)
    pkeys = partition_keys(spark, d)
    pk_of = F.element_at(F.array(*[F.lit(v) for v in pkeys]), F.col("blk") + 1)
    ev = with_keys(events, d)
    ev = ev.select("ub", "ib", F.col(C.USER_KEY).alias("key"), F.col(C.ITEM_KEY).alias("key2"),
                   F.coalesce(F.col(C.RATING), F.lit(1.0)).cast("float").alias("rating"),
                   F.col(C.TS).cast("long").alias("ts"), F.col(C.SEQ).cast("long").alias("seq")).localCheckpoint()
    fu = users.select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, F.lit(False).alias("changed"))
    fi = items.select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, F.lit(False).alias("changed"))
    stats: list[dict] = []
    for e in range(epochs):
        t0 = time.perf_counter()
        lr = float(schedule.rate(e))
        p = dataclasses.replace(params, lr=lr)
        strata = strata_schedule(d, strata_order, seed=mix_seed(seed, batch_id), epoch=e)
        sse, updates = 0.0, 0
        for s, stratum in enumerate(strata):
            pairing = [int(x) for x in stratum]
            inverse = [0] * d
            for b, ib in enumerate(pairing):
                inverse[ib] = b
            item_blk = F.element_at(F.array(*[F.lit(x) for x in inverse]),
                                    F.expr(f"pmod(key, {d})").cast("int") + 1)
            want_ib = F.element_at(F.array(*[F.lit(x) for x in pairing]), F.col("ub") + 1)
            e_rows = ev.where(F.col("ib") == want_ib).select(
                F.col("ub").alias("blk"), F.lit(_KIND_EVENT).cast("tinyint").alias("kind"),
                F.lit(None).cast("string").alias("id"), "key", "key2", "rating", "ts", "seq",
                F.lit(None).cast("array<float>").alias("vec"), F.lit(None).cast("float").alias("bias"),
                F.lit(None).cast("long").alias("count"), F.lit(None).cast("boolean").alias("changed"))
            u_rows = fu.select(F.expr(f"pmod(key, {d})").cast("int").alias("blk"),
                               F.lit(_KIND_USER).cast("tinyint").alias("kind"), "id", "key",
                               F.lit(None).cast("long").alias("key2"), F.lit(None).cast("float").alias("rating"),
                               F.lit(None).cast("long").alias("ts"), F.lit(None).cast("long").alias("seq"),
                               "vec", "bias", "count", "changed")
            i_rows = fi.select(item_blk.alias("blk"), F.lit(_KIND_ITEM).cast("tinyint").alias("kind"), "id",
                               "key", F.lit(None).cast("long").alias("key2"),
                               F.lit(None).cast("float").alias("rating"), F.lit(None).cast("long").alias("ts"),
                               F.lit(None).cast("long").alias("seq"), "vec", "bias", "count", "changed")
            rows = e_rows.unionByName(u_rows).unionByName(i_rows).withColumn("pk", pk_of)
            task = _StratumTask(params=p, seeds=[mix_seed(seed, batch_id, e, s, b) for b in range(d)],
                                seed=seed, init_scale=init_scale, rank=rank, count=e == 0)
            out = rows.repartition(d, "pk").mapInArrow(task, _OUT_SCHEMA).localCheckpoint()
            st = out.where(F.col("kind") == _KIND_STATS).select("key", "sse", "n").orderBy("key").collect()
            for r in st:  # ordered by block: deterministic float sum, as the local engine
                sse += r.sse
                updates += r.n
            fu = out.where(F.col("kind") == _KIND_USER).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, "changed")
            fi = out.where(F.col("kind") == _KIND_ITEM).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, "changed")
        loss = sse / updates if updates else float("nan")
        if updates:
            schedule.observe(loss)
        stats.append({"epoch": e, "lr": lr, "loss": loss, "updates": updates,
                      "seconds": time.perf_counter() - t0})
    if epochs == 0:  # still initialise new ids
        fu, fi = _init_only(fu, init_scale, rank, seed, "u"), _init_only(fi, init_scale, rank, seed, "i")
    return fu, fi, stats


_announced: set[tuple[str, str]] = set()


def _announce(exchange: str, why: str) -> None:
    """Log once per process which exchange ``exchange`` resolved to, and why not barrier."""
    if (exchange, why) not in _announced:
        _announced.add((exchange, why))
        log.info("spark engine: %s exchange%s", "barrier" if not why else "shuffle",
                 f" ({why})" if why else f" (model.spark_exchange = {exchange})")


def _init_only(df: DataFrame, init_scale: float, rank: int, seed: int, side: str) -> DataFrame:
    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rb in batches:
            keys = rb.column("key").to_numpy(zero_copy_only=False).astype(np.int64)
            vec, new = _vectors(rb.column("vec"), keys, rank, seed, init_scale, side)
            changed = np.asarray(rb.column("changed").to_numpy(zero_copy_only=False), bool) | new
            yield pa.RecordBatch.from_arrays(
                [rb.column("id"), rb.column("key"), _list_array(vec), rb.column("bias"), rb.column("count"),
                 pa.array(changed)], names=["id", "key", "vec", "bias", "count", "changed"])

    return df.mapInArrow(fn, FACTOR_SCHEMA + ", changed boolean")


def _vectors(col: pa.Array, keys: np.ndarray, rank: int, seed: int, scale: float, side: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """Dense float32 [n, rank] from a list<float> column; null entries get their deterministic init."""
    n = len(col)
    out = np.empty((n, rank), np.float32)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool) if n else np.zeros(0, bool)
    if valid.any():
        flat = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if flat.size != valid.sum() * rank:
            raise ValueError(f"factor vectors do not have rank {rank}")
        out[valid] = flat.reshape(-1, rank)
    new = ~valid
    if new.any():
        out[new] = init_vectors(keys[new], rank, seed, scale, side)
    return out, new


def factors_to_spark(spark: SparkSession, df: Any, rank: int) -> DataFrame:
    """Factor rows (pandas: id, key, vec, bias, count) as a FACTOR_SCHEMA DataFrame via Arrow."""
    from dsgd.local import vector_matrix

    return _arrays_to_spark(spark, df[C.ID], df[C.KEY].to_numpy(np.int64), vector_matrix(df[C.VEC], rank),
                            df[C.BIAS].to_numpy(np.float32), df[C.COUNT].to_numpy(np.int64))


def side_to_spark(spark: SparkSession, side: Any) -> DataFrame:
    """All rows of a :class:`dsgd.local.SideFactors` as a FACTOR_SCHEMA DataFrame, straight from its
    arrays (no per-row vector objects on the way)."""
    return _arrays_to_spark(spark, side.ids, np.asarray(side.keys, np.int64), np.asarray(side.vec, np.float32),
                            np.asarray(side.bias, np.float32), np.asarray(side.count, np.int64))


def _arrays_to_spark(spark: SparkSession, ids: Any, keys: np.ndarray, vec: np.ndarray, bias: np.ndarray,
                     count: np.ndarray) -> DataFrame:
    if len(keys) == 0:
        return spark.createDataFrame([], FACTOR_SCHEMA)
    table = pa.table({C.ID: pa.array([str(x) for x in ids], pa.string()), C.KEY: pa.array(keys),
                      C.VEC: _list_array(np.ascontiguousarray(vec)), C.BIAS: pa.array(bias),
                      C.COUNT: pa.array(count)})
    return spark.createDataFrame(table).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)


def _list_array(mat: np.ndarray) -> pa.Array:
    n, k = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.reshape(-1), type=pa.float32()))


def block_rows(ft: pa.Table, rank: int, seed: int, scale: float, side: str) -> list:
    """Factor rows of one block in canonical order (by key): ``[table, keys, vec, bias, count, changed]``;
    rows without a vector get their deterministic init and ``changed = True``."""
    ft = ft.combine_chunks()
    keys = ft.column("key").to_numpy().astype(np.int64)
    order = np.argsort(keys, kind="stable")
    ft = ft.take(pa.array(order))
    keys = keys[order]
    if not ft.num_rows:
        return [ft, keys, np.zeros((0, rank), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                np.zeros(0, bool)]
    vec, new = _vectors(ft.column("vec").combine_chunks(), keys, rank, seed, scale, side)
    return [ft, keys, vec, ft.column("bias").to_numpy(zero_copy_only=False).astype(np.float32),
            ft.column("count").to_numpy(zero_copy_only=False).astype(np.int64),
            np.asarray(ft.column("changed").to_numpy(zero_copy_only=False), bool) | new]


def train_block(ukeys: np.ndarray, U: np.ndarray, bu: np.ndarray, ucnt: np.ndarray, uch: np.ndarray,
                ikeys: np.ndarray, V: np.ndarray, bi: np.ndarray, icnt: np.ndarray, ich: np.ndarray,
                ek: np.ndarray, ek2: np.ndarray, r: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                params: KernelParams, seed: int, count: bool, b: int) -> tuple[float, int]:
    """One block on block-local arrays (rows sorted by key), as every Spark exchange runs it.

    Events find their rows by key (``ek`` user keys, ``ek2`` item keys); negatives come from every item
    of the block with weights ``count + 1``; the factor arrays and the ``changed`` flags (``uch``/``ich``:
    moved, or had an event) are updated in place. Returns (sum of squared errors, positives).
    """
    u_idx, i_idx = np.searchsorted(ukeys, ek), np.searchsorted(ikeys, ek2)
    if (u_idx >= len(ukeys)).any() or (ukeys[np.minimum(u_idx, len(ukeys) - 1)] != ek).any() \
            or (i_idx >= len(ikeys)).any() or (ikeys[np.minimum(i_idx, len(ikeys) - 1)] != ek2).any():
        raise RuntimeError(f"block {b}: an event's user or item has no factor row")
    popularity = params.implicit and params.negative_sampling == "popularity"
    pool = np.arange(len(ikeys), dtype=np.int64)
    weight = (icnt + 1).astype(np.float64) if popularity else None
    U0, V0 = U.copy(), V.copy()
    sse, n = run_block(U, bu, ucnt, V, bi, icnt, u_idx, i_idx, r, ts, seq, pool if params.implicit else None,
                       weight, params, seed, count)
    uch |= (U != U0).any(axis=1)
    ich |= (V != V0).any(axis=1)
    uch[u_idx] = True
    ich[i_idx] = True
    return float(sse), int(n)


@dataclasses.dataclass
class _StratumTask:
    """The function ``mapInArrow`` runs on each partition: the blocks it holds, through the kernel."""

    params: KernelParams
    seeds: list[int]
    seed: int
    init_scale: float
    rank: int
    count: bool = True

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if os.environ.get("DSGD_FAIL_FIRST_ATTEMPT") == "1":  # fault suite: a task retry must not change the result
            from pyspark import TaskContext

            ctx = TaskContext.get()
            if ctx is not None and ctx.attemptNumber() == 0:
                raise RuntimeError(f"DSGD_FAIL_FIRST_ATTEMPT: injected failure of partition {ctx.partitionId()} "
                                   f"stage {ctx.stageId()} attempt 0")
        table = pa.Table.from_batches(list(batches))
        if table.num_rows == 0:
            return
        blk = table.column("blk").to_numpy()
        for b in np.unique(blk):
            yield from self._block(table.filter(pa.array(blk == b)), int(b))

    def _block(self, t: pa.Table, b: int) -> Iterator[pa.RecordBatch]:
        kind = t.column("kind").to_numpy()
        ev = t.filter(pa.array(kind == _KIND_EVENT))
        sides = []
        for k, side in ((_KIND_USER, "u"), (_KIND_ITEM, "i")):
            sides.append(block_rows(t.filter(pa.array(kind == k)), self.rank, self.seed, self.init_scale, side))
        (ut, ukeys, U, bu, ucnt, uch), (it, ikeys, V, bi, icnt, ich) = sides
        sse, n = 0.0, 0
        if ev.num_rows:
            sse, n = train_block(ukeys, U, bu, ucnt, uch, ikeys, V, bi, icnt, ich,
                                 ev.column("key").to_numpy().astype(np.int64),
                                 ev.column("key2").to_numpy().astype(np.int64),
                                 ev.column("rating").to_numpy(zero_copy_only=False).astype(np.float32),
                                 ev.column("ts").to_numpy().astype(np.int64),
                                 ev.column("seq").to_numpy().astype(np.int64),
                                 self.params, self.seeds[b], self.count, b)
        for k, ft, keys, vec, bias, count, changed in ((_KIND_USER, ut, ukeys, U, bu, ucnt, uch),
                                                       (_KIND_ITEM, it, ikeys, V, bi, icnt, ich)):
            if not len(keys):
                continue
            m = len(keys)
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(m, k, np.int8)), ft.column("id").combine_chunks(), pa.array(keys),
                 _list_array(vec), pa.array(bias), pa.array(count), pa.array(changed),
                 pa.nulls(m, pa.float64()), pa.nulls(m, pa.int64())],
                names=["kind", "id", "key", "vec", "bias", "count", "changed", "sse", "n"])
        yield pa.RecordBatch.from_arrays(
            [pa.array([_KIND_STATS], pa.int8()), pa.nulls(1, pa.string()), pa.array([b], pa.int64()),
             pa.nulls(1, pa.list_(pa.float32())), pa.nulls(1, pa.float32()), pa.nulls(1, pa.int64()),
             pa.nulls(1, pa.bool_()), pa.array([float(sse)]), pa.array([int(n)], pa.int64())],
            names=["kind", "id", "key", "vec", "bias", "count", "changed", "sse", "n"])
