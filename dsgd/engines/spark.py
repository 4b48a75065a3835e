"""Stratified DSGD on Spark: per stratum, the d blocks run in parallel in Python workers.

:func:`train_epochs_spark` runs one of two exchanges: ``barrier`` (:mod:`dsgd.engines.barrier`, one
barrier stage for every epoch) or ``shuffle``, described here. For stratum ``s`` of epoch ``e``, the rows of a block ``(b, stratum[b])`` (its events, the factor rows of
user block ``b`` and of item block ``stratum[b]``) are tagged with ``blk = b`` and shuffled so that each
block lands in its own partition; ``mapInArrow`` hands each partition to the compiled kernel
(:func:`dsgd.core.kernel.run_block`) as Arrow arrays and gets back every factor row of the block. Since
every user block and every item block is in exactly one block of a stratum, a stratum's output is the
complete new factor set, which the next stratum consumes. The output of each stratum is
``localCheckpoint``-ed, so the plan never grows with the number of strata.

The result equals :func:`dsgd.engines.local.train_epochs` on the same inputs (same strata, seeds, negative
pools and event order), which the tests assert.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.hashing import mix_seed
from dsgd.core.params import KernelParams
from dsgd.core.strata import strata_schedule
from dsgd.engines.blocks import (
    KIND_EVENT,
    KIND_ITEM,
    KIND_STATS,
    KIND_USER,
    block_rows,
    block_vectors,
    list_array,
    partition_keys,
    train_block,
    with_keys,
)

log = logging.getLogger(__name__)

#: ``hook(task_context, exchange)`` run at the start of every DSGD task (tests: fault injection).
TaskHook = Callable[[Any, str], None]

#: How factors move between strata (see :func:`train_epochs_spark`).
EXCHANGES = ("auto", "barrier", "shuffle")

#: Factor rows exchanged with the engine: one side at a time.
FACTOR_SCHEMA = f"{C.ID} string, {C.KEY} long, {C.VEC} array<float>, {C.BIAS} float, {C.COUNT} long"

_OUT_SCHEMA = ("kind tinyint, id string, key long, vec array<float>, bias float, count long, changed boolean, "
               "sse double, n long")


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
                       n_items: int | None = None, task_hook: TaskHook | None = None
                       ) -> tuple[DataFrame, DataFrame, list[dict]]:
    """Stratified DSGD of ``events`` starting from ``users``/``items`` factor rows (FACTOR_SCHEMA).

    Every id of ``events`` must be present in ``users``/``items`` (see :func:`ensure_ids`; a null
    ``vec`` marks a new id). Returns the new user rows, item rows (both FACTOR_SCHEMA plus a boolean
    ``changed``) and per-epoch stats like :func:`dsgd.engines.local.train_epochs`.

    ``exchange`` says how factors move between strata. ``"barrier"``: one barrier stage runs every
    epoch, tasks keep their user blocks and swap item blocks (:mod:`dsgd.engines.barrier`; fast, needs
    the item factors in each task's memory). ``"shuffle"``: one stage per stratum, all factor rows
    shuffled and checkpointed between strata (this module; any size). ``"auto"``: barrier while the
    item factors take at most :data:`dsgd.engines.barrier.MAX_ITEM_BYTES` (``n_items`` if the caller
    knows it, else counted) and the session can run barrier stages. All give the same factors.

    ``task_hook`` (tests only) is called at the start of every DSGD task as ``hook(task_context,
    exchange)``; the fault suite uses it to fail first attempts and check that retries change nothing.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {', '.join(EXCHANGES)}; got {exchange!r}")
    kw = dict(d=d, epochs=epochs, schedule=schedule, strata_order=strata_order, seed=seed, batch_id=batch_id,
              init_scale=init_scale, rank=rank, task_hook=task_hook)
    if epochs > 0 and exchange != "shuffle" and not _barrier_unusable(spark, items, exchange, n_items, rank):
        from dsgd.engines.barrier import train_epochs_barrier

        return train_epochs_barrier(spark, events, users, items, params, **kw)
    return _train_shuffle(spark, events, users, items, params, **kw)


def _barrier_unusable(spark: SparkSession, items: DataFrame, exchange: str, n_items: int | None, rank: int) -> str:
    """Why ``exchange`` ("barrier" or "auto") does not run the barrier exchange here ("" when it does)."""
    from dsgd.engines.barrier import MAX_ITEM_BYTES, barrier_usable

    why = barrier_usable(spark)
    if exchange == "barrier" and why:
        raise ValueError(f"exchange='barrier' cannot run here: {why}; use exchange='shuffle'")
    if exchange == "auto" and not why:
        size = (items.count() if n_items is None else n_items) * (4 * rank + 24)
        why = f"item factors take {size / 2**20:.0f} MB > {MAX_ITEM_BYTES / 2**20:.0f} MB" if size > MAX_ITEM_BYTES else ""
    _announce(exchange, why)
    return why


def _train_shuffle(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame,
                   params: KernelParams, *, d: int, epochs: int, schedule: Any, strata_order: str, seed: int,
                   batch_id: int, init_scale: float, rank: int, task_hook: TaskHook | None
                   ) -> tuple[DataFrame, DataFrame, list[dict]]:
    """The shuffle exchange: one ``mapInArrow`` stage per stratum, every factor row shuffled between."""
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
        sse, updates = 0.0, 0
        for s, stratum in enumerate(strata_schedule(d, strata_order, seed=mix_seed(seed, batch_id), epoch=e)):
            task = _StratumTask(params=p, seeds=[mix_seed(seed, batch_id, e, s, b) for b in range(d)],
                                seed=seed, init_scale=init_scale, rank=rank, count=e == 0, task_hook=task_hook)
            rows = _stratum_rows(ev, fu, fi, [int(x) for x in stratum], d).withColumn("pk", pk_of)
            out = rows.repartition(d, "pk").mapInArrow(task, _OUT_SCHEMA).localCheckpoint()
            for r in out.where(F.col("kind") == KIND_STATS).select("key", "sse", "n").orderBy("key").collect():
                sse += r.sse  # ordered by block: a deterministic float sum, as in the local engine
                updates += r.n
            fu = out.where(F.col("kind") == KIND_USER).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, "changed")
            fi = out.where(F.col("kind") == KIND_ITEM).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, "changed")
        loss = sse / updates if updates else float("nan")
        if updates:
            schedule.observe(loss)
        stats.append({"epoch": e, "lr": lr, "loss": loss, "updates": updates, "seconds": time.perf_counter() - t0})
    if epochs == 0:  # still initialise new ids
        fu, fi = _init_only(fu, init_scale, rank, seed, "u"), _init_only(fi, init_scale, rank, seed, "i")
    return fu, fi, stats


def _stratum_rows(ev: DataFrame, fu: DataFrame, fi: DataFrame, pairing: list[int], d: int) -> DataFrame:
    """The input of one stratum: each block ``(b, pairing[b])``'s events, user rows and item rows tagged
    with ``blk = b`` and their kind."""
    inverse = [0] * d
    for b, ib in enumerate(pairing):
        inverse[ib] = b
    item_blk = F.element_at(F.array(*[F.lit(x) for x in inverse]), F.expr(f"pmod(key, {d})").cast("int") + 1)
    want_ib = F.element_at(F.array(*[F.lit(x) for x in pairing]), F.col("ub") + 1)
    null = {"id": "string", "key2": "long", "rating": "float", "ts": "long", "seq": "long", "vec": "array<float>",
            "bias": "float", "count": "long", "changed": "boolean"}

    def shape(df: DataFrame, blk: Any, kind: int, **cols: Any) -> DataFrame:
        full = {"blk": blk, "kind": F.lit(kind).cast("tinyint"), "id": None, "key": F.col("key"),
                **{c: None for c in null if c != "id"}, **cols}
        return df.select(*[(F.lit(None).cast(null[c]) if v is None else v).alias(c) for c, v in full.items()])

    side = {c: F.col(c) for c in ("id", "vec", "bias", "count", "changed")}
    return (shape(ev.where(F.col("ib") == want_ib), F.col("ub"), KIND_EVENT,
                  **{c: F.col(c) for c in ("key2", "rating", "ts", "seq")})
            .unionByName(shape(fu, F.expr(f"pmod(key, {d})").cast("int"), KIND_USER, **side))
            .unionByName(shape(fi, item_blk, KIND_ITEM, **side)))


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
            vec, new = block_vectors(rb.column("vec"), keys, rank, seed, init_scale, side)
            changed = np.asarray(rb.column("changed").to_numpy(zero_copy_only=False), bool) | new
            yield pa.RecordBatch.from_arrays(
                [rb.column("id"), rb.column("key"), list_array(vec), rb.column("bias"), rb.column("count"),
                 pa.array(changed)], names=["id", "key", "vec", "bias", "count", "changed"])

    return df.mapInArrow(fn, FACTOR_SCHEMA + ", changed boolean")


def factors_to_spark(spark: SparkSession, df: Any, rank: int) -> DataFrame:
    """Factor rows (pandas: id, key, vec, bias, count) as a FACTOR_SCHEMA DataFrame via Arrow."""
    from dsgd.core.factors import vector_matrix

    return _arrays_to_spark(spark, df[C.ID], df[C.KEY].to_numpy(np.int64), vector_matrix(df[C.VEC], rank),
                            df[C.BIAS].to_numpy(np.float32), df[C.COUNT].to_numpy(np.int64))


def side_to_spark(spark: SparkSession, side: Any) -> DataFrame:
    """All rows of a :class:`dsgd.engines.local.SideFactors` as a FACTOR_SCHEMA DataFrame, straight from its
    arrays (no per-row vector objects on the way)."""
    return _arrays_to_spark(spark, side.ids, np.asarray(side.keys, np.int64), np.asarray(side.vec, np.float32),
                            np.asarray(side.bias, np.float32), np.asarray(side.count, np.int64))


def _arrays_to_spark(spark: SparkSession, ids: Any, keys: np.ndarray, vec: np.ndarray, bias: np.ndarray,
                     count: np.ndarray) -> DataFrame:
    if len(keys) == 0:
        return spark.createDataFrame([], FACTOR_SCHEMA)
    table = pa.table({C.ID: pa.array([str(x) for x in ids], pa.string()), C.KEY: pa.array(keys),
                      C.VEC: list_array(np.ascontiguousarray(vec)), C.BIAS: pa.array(bias),
                      C.COUNT: pa.array(count)})
    return spark.createDataFrame(table).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)


@dataclasses.dataclass
class _StratumTask:
    """The function ``mapInArrow`` runs on each partition: the blocks it holds, through the kernel."""

    params: KernelParams
    seeds: list[int]
    seed: int
    init_scale: float
    rank: int
    count: bool = True
    task_hook: TaskHook | None = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if self.task_hook is not None:
            from pyspark import TaskContext

            self.task_hook(TaskContext.get(), "shuffle")
        table = pa.Table.from_batches(list(batches))
        if table.num_rows == 0:
            return
        blk = table.column("blk").to_numpy()
        for b in np.unique(blk):
            yield from self._block(table.filter(pa.array(blk == b)), int(b))

    def _block(self, t: pa.Table, b: int) -> Iterator[pa.RecordBatch]:
        kind = t.column("kind").to_numpy()
        ev = t.filter(pa.array(kind == KIND_EVENT))
        sides = []
        for k, side in ((KIND_USER, "u"), (KIND_ITEM, "i")):
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
        for k, ft, keys, vec, bias, count, changed in ((KIND_USER, ut, ukeys, U, bu, ucnt, uch),
                                                       (KIND_ITEM, it, ikeys, V, bi, icnt, ich)):
            if not len(keys):
                continue
            m = len(keys)
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(m, k, np.int8)), ft.column("id").combine_chunks(), pa.array(keys),
                 list_array(vec), pa.array(bias), pa.array(count), pa.array(changed),
                 pa.nulls(m, pa.float64()), pa.nulls(m, pa.int64())],
                names=["kind", "id", "key", "vec", "bias", "count", "changed", "sse", "n"])
        yield pa.RecordBatch.from_arrays(
            [pa.array([KIND_STATS], pa.int8()), pa.nulls(1, pa.string()), pa.array([b], pa.int64()),
             pa.nulls(1, pa.list_(pa.float32())), pa.nulls(1, pa.float32()), pa.nulls(1, pa.int64()),
             pa.nulls(1, pa.bool_()), pa.array([float(sse)]), pa.array([int(n)], pa.int64())],
            names=["kind", "id", "key", "vec", "bias", "count", "changed", "sse", "n"])
