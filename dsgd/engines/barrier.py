"""Stratified DSGD in ONE Spark barrier stage: tasks keep their user blocks and swap item blocks.

The shuffle engine (:func:`dsgd.engines.spark.train_epochs_spark` with ``exchange="shuffle"``) runs one
Spark stage per stratum and moves every factor row through a shuffle and a ``localCheckpoint`` each
time: a fixed cost per stratum (bench/RESULTS.md, "DSGD vs ALS"). Here ``T = min(d, slots)`` tasks start
together in one barrier stage and run every epoch:

* task ``t`` owns user blocks ``b`` with ``b % T == t`` (their events and user rows never move) and
  item blocks ``c`` with ``c % T == t`` (it emits their rows at the end);
* every task holds a copy of every item block (exchanged once at the start);
* in stratum ``s`` task ``t`` trains its blocks ``(b, stratum[b])`` one after the other with the same
  kernel call, seeds and block-local arrays as the other engines, then every task sends the item
  blocks it changed to every other task (:class:`dsgd.engines.peer_exchange.PeerExchange`, direct TCP; every
  item block is in exactly one block of a stratum), so each copy is again complete before the next
  stratum;
* the sum of squared errors is added in (stratum, block) order and every task runs its own copy of the
  learning-rate schedule on the same losses: all copies agree bit for bit, and the driver replays the
  schedule on the returned losses so its state ends where the tasks' did.

The factors equal the local and shuffle engines' (the tests assert it). Limits: every task holds all
item factors and receives a stratum's changed item blocks from its peers, so ``exchange="auto"`` uses
this engine only while the item factors are small (:data:`MAX_ITEM_BYTES`);
barrier stages need ``T`` free task slots at once and do not run under dynamic allocation. A failed
task fails the stage, which Spark re-runs whole; the result does not change (everything is seeded).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Iterator
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
    list_array,
    partition_keys,
    train_block,
    with_keys,
)

#: ``exchange="auto"`` picks the barrier engine while all item factors take at most this many bytes.
MAX_ITEM_BYTES = 32 << 20

_IN_SCHEMA = ("pk int, kind tinyint, blk int, blk2 int, id string, key long, key2 long, rating float, ts long, "
              "seq long, vec array<float>, bias float, count long, changed boolean")
_OUT_SCHEMA = ("kind tinyint, id string, key long, vec array<float>, bias float, count long, changed boolean, "
               "sse double, n long, seconds double")
_EMPTY_IN = pa.schema([("kind", pa.int8())])  # the input of a task that got no rows


def barrier_slots(spark: SparkSession, d: int) -> int:
    """Tasks of the barrier stage: one per block, at most one per task slot the application has now.

    The slots are the scheduler's own count (``SparkContext.maxNumConcurrentTasks``); the default
    parallelism is only a fallback, since ``spark.default.parallelism`` may be set above the cores and a
    barrier stage with more tasks than slots cannot start.
    """
    slots = 0
    try:
        jsc = spark.sparkContext._jsc.sc()
        slots = int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # noqa: BLE001 - internal API moved: fall back to the public number
        slots = 0
    if slots <= 0:
        slots = spark.sparkContext.defaultParallelism
    return max(1, min(d, slots))


def barrier_usable(spark: SparkSession) -> str:
    """Why the barrier engine cannot run on this session ('' when it can)."""
    conf = spark.sparkContext.getConf()
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return "barrier stages do not run under dynamic allocation (spark.dynamicAllocation.enabled=true)"
    return ""


def train_epochs_barrier(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame,
                         params: KernelParams, *, d: int, epochs: int, schedule: Any, strata_order: str,
                         seed: int, batch_id: int, init_scale: float, rank: int, task_hook: Any = None
                         ) -> tuple[DataFrame, DataFrame, list[dict]]:
    """Same contract as :func:`dsgd.engines.spark.train_epochs_spark` (``epochs >= 1``)."""
    n_tasks = barrier_slots(spark, d)
    pkeys = partition_keys(spark, n_tasks)
    pk_of = F.element_at(F.array(*[F.lit(v) for v in pkeys]), F.expr(f"pmod(blk, {n_tasks})") + 1)
    nulls = {"id": "string", "key2": "long", "rating": "float", "ts": "long", "seq": "long",
             "vec": "array<float>", "bias": "float", "count": "long", "changed": "boolean", "blk2": "int"}

    def shape(df: DataFrame, kind: int, **cols: Any) -> DataFrame:
        full = {"kind": F.lit(kind).cast("tinyint"), **cols}
        for name, typ in nulls.items():
            full.setdefault(name, F.lit(None).cast(typ))
        return df.select(*[v.alias(k) for k, v in full.items()])

    ev = with_keys(events, d)
    e_rows = shape(ev, KIND_EVENT, blk=F.col("ub"), blk2=F.col("ib"), key=F.col(C.USER_KEY),
                   key2=F.col(C.ITEM_KEY), rating=F.coalesce(F.col(C.RATING), F.lit(1.0)).cast("float"),
                   ts=F.col(C.TS).cast("long"), seq=F.col(C.SEQ).cast("long"))
    side_cols = {"id": F.col(C.ID), "key": F.col(C.KEY), "vec": F.col(C.VEC), "bias": F.col(C.BIAS),
                 "count": F.col(C.COUNT), "changed": F.lit(False)}
    blk = F.expr(f"pmod(key, {d})").cast("int")
    u_rows = shape(users, KIND_USER, blk=blk, **side_cols)
    i_rows = shape(items, KIND_ITEM, blk=blk, **side_cols)
    rows = e_rows.unionByName(u_rows).unionByName(i_rows).withColumn("pk", pk_of).select(
        *[c.split()[0] for c in _IN_SCHEMA.split(", ")])
    task = _BarrierTask(params=params, d=d, n_tasks=n_tasks, epochs=epochs, schedule=schedule,
                        strata_order=strata_order, seed=seed, batch_id=batch_id, init_scale=init_scale, rank=rank,
                        task_hook=task_hook)
    # the shuffle after the barrier stage makes it a shuffle-map stage, which Spark re-runs whole when a
    # task fails (a failed barrier *result* stage is not retried)
    out = (rows.repartition(n_tasks, "pk").mapInArrow(task, _OUT_SCHEMA, barrier=True)
           .repartition(n_tasks).localCheckpoint())
    st = out.where(F.col("kind") == KIND_STATS).select("key", "sse", "n", "seconds").orderBy("key").collect()
    stats: list[dict] = []
    for r in st:  # replay the schedule on the tasks' losses: the driver's copy ends in the same state
        lr = float(schedule.rate(int(r.key)))
        loss = r.sse / r.n if r.n else float("nan")
        if r.n:
            schedule.observe(loss)
        stats.append({"epoch": int(r.key), "lr": lr, "loss": loss, "updates": int(r.n), "seconds": r.seconds})
    cols = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, "changed"]
    return (out.where(F.col("kind") == KIND_USER).select(*cols),
            out.where(F.col("kind") == KIND_ITEM).select(*cols), stats)


@dataclasses.dataclass
class _Side:
    """The rows of one block of one side, sorted by key (the canonical block-local order)."""

    ids: pa.Array | None
    keys: np.ndarray
    vec: np.ndarray
    bias: np.ndarray
    count: np.ndarray
    changed: np.ndarray

    def state(self) -> tuple:
        return self.keys, self.vec, self.bias, self.count, self.changed


def _side_blocks(t: pa.Table, kind_col: np.ndarray, kind: int, rank: int, seed: int, scale: float, side: str
                 ) -> dict[int, _Side]:
    ft = t.filter(pa.array(kind_col == kind)).combine_chunks()
    if ft.num_rows == 0:
        return {}
    blk = ft.column("blk").to_numpy()
    out: dict[int, _Side] = {}
    for b in np.unique(blk):
        bt, *arrays = block_rows(ft.filter(pa.array(blk == b)), rank, seed, scale, side)
        out[int(b)] = _Side(bt.column("id").combine_chunks(), *arrays)
    return out


def _pack(obj: Any) -> bytes:
    # protocol 4: unpickled numpy arrays own writable memory (the kernel updates them in place)
    return pickle.dumps(obj, protocol=4)


def _unpack(data: bytes) -> Any:
    return pickle.loads(data)


@dataclasses.dataclass
class _BarrierTask:
    """What each barrier task runs (``mapInArrow(..., barrier=True)``): all epochs over its blocks."""

    params: KernelParams
    d: int
    n_tasks: int
    epochs: int
    schedule: Any
    strata_order: str
    seed: int
    batch_id: int
    init_scale: float
    rank: int
    task_hook: Any = None
    secret: bytes = dataclasses.field(default_factory=lambda: os.urandom(32))

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        from dsgd.engines.peer_exchange import PeerExchange

        ctx = BarrierTaskContext.get()
        if self.task_hook is not None:
            self.task_hook(ctx, "barrier")
        parts = list(batches)
        t = pa.Table.from_batches(parts) if parts else pa.Table.from_batches([], _EMPTY_IN)
        me = ctx.partitionId()
        kind = t.column("kind").to_numpy() if t.num_rows else np.zeros(0, np.int8)
        users = _side_blocks(t, kind, KIND_USER, self.rank, self.seed, self.init_scale, "u")
        own_items = _side_blocks(t, kind, KIND_ITEM, self.rank, self.seed, self.init_scale, "i")
        ev = self._events(t, kind)
        with PeerExchange(ctx, self.secret) as peers:
            stats, items = self._train(peers, me, users, own_items, ev)
        for kind_id, blocks in ((KIND_USER, users), (KIND_ITEM, {c: items[c] for c in own_items})):
            for side in blocks.values():
                if len(side.keys):
                    yield _rows(kind_id, side)
        if me == 0:
            for e, sse, n, secs in stats:
                yield _stats_row(e, sse, n, secs)

    def _train(self, peers: Any, me: int, users: dict[int, _Side], own_items: dict[int, _Side],
               ev: dict[tuple[int, int], tuple]) -> tuple[list[tuple], dict[int, _Side]]:
        """All epochs; returns per-epoch (epoch, sse, updates, seconds) and the final item blocks."""
        items: dict[int, _Side] = dict(own_items)  # every task gets every item block
        for peer, msg in enumerate(peers.all_gather(_pack({c: s.state() for c, s in own_items.items()}))):
            if peer != me:
                items.update({c: _Side(None, *state) for c, state in _unpack(msg).items()})
        for b in users:
            if b % self.n_tasks != me:
                raise RuntimeError(f"barrier task {me} got user block {b} of task {b % self.n_tasks}")

        mine = [b for b in range(self.d) if b % self.n_tasks == me]
        stats = []
        for e in range(self.epochs):
            t0 = time.perf_counter()
            p = dataclasses.replace(self.params, lr=float(self.schedule.rate(e)))
            sse, updates = 0.0, 0
            for s, stratum in enumerate(strata_schedule(self.d, self.strata_order,
                                                        seed=mix_seed(self.seed, self.batch_id), epoch=e)):
                done: dict[int, tuple] = {}
                block_stats: dict[int, tuple[float, int]] = {}
                for b in mine:
                    c = int(stratum[b])
                    if (b, c) in ev and b in users and c in items:
                        block_stats[b] = self._train_block(users[b], items[c], ev[(b, c)], p, e, s, b)
                        done[c] = items[c].state()
                for peer, msg in enumerate(peers.all_gather(_pack({"items": done, "stats": block_stats}))):
                    if peer == me:
                        continue
                    got = _unpack(msg)
                    for c, state in got["items"].items():
                        items[c] = _Side(items[c].ids, *state)
                    block_stats.update(got["stats"])
                for b in range(self.d):  # block order: the same float sum as the other engines
                    if b in block_stats:
                        sse += block_stats[b][0]
                        updates += block_stats[b][1]
            loss = sse / updates if updates else float("nan")
            if updates:
                self.schedule.observe(loss)
            stats.append((e, sse, updates, time.perf_counter() - t0))
        return stats, items

    def _events(self, t: pa.Table, kind: np.ndarray) -> dict[tuple[int, int], tuple]:
        et = t.filter(pa.array(kind == KIND_EVENT))
        if et.num_rows == 0:
            return {}
        ub, ib = et.column("blk").to_numpy(), et.column("blk2").to_numpy()
        out = {}
        for b, c in {(int(x), int(y)) for x, y in zip(ub, ib, strict=True)}:
            bt = et.filter(pa.array((ub == b) & (ib == c)))
            out[(b, c)] = (bt.column("key").to_numpy().astype(np.int64), bt.column("key2").to_numpy().astype(np.int64),
                           bt.column("rating").to_numpy(zero_copy_only=False).astype(np.float32),
                           bt.column("ts").to_numpy().astype(np.int64), bt.column("seq").to_numpy().astype(np.int64))
        return out

    def _train_block(self, u: _Side, it: _Side, events: tuple, p: KernelParams, e: int, s: int, b: int
                     ) -> tuple[float, int]:
        return train_block(u.keys, u.vec, u.bias, u.count, u.changed, it.keys, it.vec, it.bias, it.count,
                           it.changed, *events, p, mix_seed(self.seed, self.batch_id, e, s, b), e == 0, b)


def _rows(kind: int, side: _Side) -> pa.RecordBatch:
    m = len(side.keys)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(m, kind, np.int8)), side.ids, pa.array(side.keys), list_array(side.vec),
         pa.array(side.bias), pa.array(side.count), pa.array(side.changed), pa.nulls(m, pa.float64()),
         pa.nulls(m, pa.int64()), pa.nulls(m, pa.float64())],
        names=[c.split()[0] for c in _OUT_SCHEMA.split(", ")])


def _stats_row(epoch: int, sse: float, n: int, seconds: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([KIND_STATS], pa.int8()), pa.nulls(1, pa.string()), pa.array([epoch], pa.int64()),
         pa.nulls(1, pa.list_(pa.float32())), pa.nulls(1, pa.float32()), pa.nulls(1, pa.int64()),
         pa.nulls(1, pa.bool_()), pa.array([float(sse)]), pa.array([int(n)], pa.int64()), pa.array([seconds])],
        names=[c.split()[0] for c in _OUT_SCHEMA.split(", ")])
