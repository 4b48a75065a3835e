"""One micro-batch as a pipeline of named steps: parse -> append -> evaluate -> train -> guard -> commit
-> record.

:class:`MicroBatch` runs the steps for one ``foreachBatch`` call; the decisions they take (replay,
records lost, divergence, the next metadata, the metrics row) are pure functions in
:mod:`streaming.decisions`. Long-lived state (the cached model, the lag probe, whether the next batch
may be a replay) lives in :class:`TrainerContext`, owned by :class:`streaming.trainer.StreamTrainer`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.arrays import unique
from dsgd.core.config import Config
from dsgd.core.hashing import id_key, mix_seed
from dsgd.core.params import params_from_model_config
from dsgd.store.errors import StaleModel
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables, append_once, row_exists
from streaming import decisions as D
from streaming.appends import BatchAppends
from streaming.evaluate import evaluate_batch, sample_events, sample_size
from streaming.evaluate_spark import evaluate_batch_spark
from streaming.events import parse_events, raw_of_quarantined_only, valid_events
from streaming.faults import FaultHook
from streaming.lag import LagProbe
from streaming.model_state import ModelCache, ModelState, StepSchedule
from streaming.train import divergence_of_rows, new_id_counts, train_local, train_spark

log = logging.getLogger("dsgd.stream")

#: How often a batch is recomputed when another writer changed the model while it trained.
STALE_RETRIES = 5


@dataclass
class TrainerContext:
    """What outlives a batch: config, tables, the factor store, the cached model, the lag probe."""

    cfg: Config
    tables: Tables
    store: FactorStore
    cache: ModelCache
    lag: LagProbe
    fault_hook: FaultHook | None = None
    check_replay: bool = True  # the next batch may be a replay: look its events and metrics rows up first
    events_since: str | None = None  # the earliest event date appended since the last maintenance pass
    results: list[D.BatchResult] = field(default_factory=list)

    def fault(self, point: str, batch_id: int) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point, batch_id)


@dataclass
class ParsedBatch:
    """The batch's records read once into the driver: valid events, offsets, counts."""

    parsed: DataFrame  # every record with its parsed fields and reason (persisted)
    events: DataFrame  # the valid events (lazy, over ``parsed``)
    ev: pd.DataFrame  # the valid events in the driver: user, item, rating, ts, seq
    offsets: dict[str, list[int]]

    @property
    def ends(self) -> dict[str, int]:
        return {part: hi for part, (_lo, hi) in self.offsets.items()}


class MicroBatch:
    """The steps of one micro-batch; :meth:`run` runs them in order."""

    def __init__(self, ctx: TrainerContext, batch_df: DataFrame, batch_id: int, stream_id: str) -> None:
        self.ctx, self.cfg = ctx, ctx.cfg
        self.spark: SparkSession = batch_df.sparkSession
        self.batch_df, self.batch_id, self.stream_id = batch_df, batch_id, stream_id
        self.app = f"{self.cfg.app.name}-{stream_id}"
        self.res = D.BatchResult(batch_id=batch_id, stream_id=stream_id)
        self.appends: BatchAppends | None = None
        self.t0 = time.perf_counter()

    def run(self) -> D.BatchResult:
        m = self.cfg.model
        parsed = raw_of_quarantined_only(parse_events(self.batch_df, explicit=m.kind == "explicit",
                                                      rating_min=m.rating_min, rating_max=m.rating_max)).persist()
        try:
            batch = self.parse(parsed)
            self.start_appends(batch)
            self.apply(batch)
            self.ctx.fault("after_factors", self.batch_id)
            self.record()
        except BaseException:
            self.ctx.cache.drop()  # never trust an in-memory model across a failed batch
            self.ctx.check_replay = True  # the batch may be retried after its events or metrics were written
            if self.appends is not None:
                try:
                    self.appends.wait()
                except BaseException:  # noqa: BLE001 - the batch's own error is the one to raise
                    pass
            raise
        finally:
            parsed.unpersist()
        return self.res

    # ---- parse ----------------------------------------------------------------------------------
    def parse(self, parsed: DataFrame) -> ParsedBatch:
        res = self.res
        # Arrow, not pandas, for the bookkeeping columns: only the valid events become a pandas frame
        rows = parsed.select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ, "topic", "partition", "offset",
                             "reason").toArrow()
        valid = pc.is_null(rows["reason"])
        res.rows_in, res.rows_valid = rows.num_rows, int(pc.sum(valid).as_py() or 0)
        res.rows_quarantined = res.rows_in - res.rows_valid
        res.quarantine_reasons = D.quarantine_summary(rows["reason"])
        offsets = D.offsets_of(rows)
        res.offsets = json.dumps(offsets, sort_keys=True)
        ev = rows.select([C.USER, C.ITEM, C.RATING, C.TS, C.SEQ]).filter(valid).to_pandas()
        res.lag_ms = int(time.time() * 1000 - ev[C.TS].max()) if len(ev) else -1
        if len(ev):
            first = time.strftime("%Y-%m-%d", time.gmtime(int(ev[C.TS].min()) // 1000))
            self.ctx.events_since = min(first, self.ctx.events_since or first)
        res.lag_records = self.ctx.lag.lag(offsets)
        res.seconds_parse = time.perf_counter() - self.t0
        return ParsedBatch(parsed=parsed, events=valid_events(parsed), ev=ev, offsets=offsets)

    # ---- append ---------------------------------------------------------------------------------
    def start_appends(self, batch: ParsedBatch) -> None:
        first = batch.ev.iloc[0].to_dict() if len(batch.ev) else None
        self.appends = BatchAppends(self.ctx.tables, app=self.app, batch_id=self.batch_id).start(
            batch.parsed, batch.events, first=first, n_quarantined=self.res.rows_quarantined,
            check_replay=self.ctx.check_replay)

    def wait_appends(self) -> None:
        """Events are in Delta before the factors that learnt from them; then the ``after_events`` point."""
        if self.appends is not None:
            self.appends.wait()
            self.appends = None
            self.ctx.fault("after_events", self.batch_id)

    # ---- evaluate, train, guard, commit (retried when another writer wins) ----------------------
    def apply(self, batch: ParsedBatch) -> None:
        for attempt in range(1, STALE_RETRIES + 1):
            try:
                self._apply_once(batch, self.ctx.cache.get())
                self.wait_appends()
                return
            except StaleModel as exc:  # another writer (the weekly retrain, a rollback) committed first
                self.ctx.cache.drop()
                if attempt == STALE_RETRIES:
                    raise
                log.warning("batch %d: the model changed underneath (%s); recomputing from the new model "
                            "(attempt %d)", self.batch_id, exc, attempt + 1)

    def _apply_once(self, batch: ParsedBatch, state: ModelState) -> None:
        meta, res = state.meta, self.res
        if meta.get("stream_id") == self.stream_id:
            res.records_lost = D.records_lost(meta.get("offsets_end", {}), batch.offsets)
            if res.records_lost:
                res.add_alert(f"data loss: {res.records_lost} records were deleted from Kafka before they were "
                              "read (kafka.fail_on_data_loss=false)")
                log.warning("batch %d: %s", self.batch_id, res.alert)
        if D.already_applied(meta, self.stream_id, self.batch_id):  # replay of a batch committed before a crash
            D.replay_result(res, meta, self.batch_id)
            log.info("batch %d: factors already applied, replaying metrics only", self.batch_id)
        elif res.rows_valid:
            self.train(batch, state)
        else:
            self.commit(state, None, None, D.empty_meta(meta, stream_id=self.stream_id, ends=batch.ends))

    def train(self, batch: ParsedBatch, state: ModelState) -> None:
        cfg, m, res, ev = self.cfg, self.cfg.model, self.res, batch.ev
        local = state.users is not None  # the Spark engine leaves the factors on the executors
        n_users = len(state.users) if local else self._n_rows(state, C.SIDE_USER)
        n_items = len(state.items) if local else self._n_rows(state, C.SIDE_ITEM)
        t = time.perf_counter()
        self.evaluate(ev, state, n_items)
        res.seconds_eval = time.perf_counter() - t
        self.ctx.fault("after_eval", self.batch_id)

        t = time.perf_counter()
        n_old, mu = int(state.meta.get("n_ratings", 0)), float(state.meta.get("mu", 0.0))
        if m.kind == "explicit":
            mu = D.running_mean(mu, n_old, ev[C.RATING].to_numpy(np.float64))
        params = params_from_model_config(m, mu=mu)
        schedule = StepSchedule.from_meta(state.meta, m.lr_schedule, m.lr)
        if local:
            su, si = state.users, state.items
            uk, ik = id_key(ev[C.USER].to_numpy(object)), id_key(ev[C.ITEM].to_numpy(object))
            res.new_users = int(unique(uk[su.index_of(uk) < 0]).size)
            res.new_items = int(unique(ik[si.index_of(ik) < 0]).size)
            out = train_local(ev, uk, ik, su, si, params, schedule, self.batch_id, m)
        else:
            # one materialised copy of the batch's events: the Kafka parse stays out of every later plan
            # (a plan holding it several times overflows the stack of Spark's plan-string regexes)
            events = batch.events.select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ).localCheckpoint()
            res.new_users, res.new_items = new_id_counts(events, self.ctx.store, state.version)
            out = train_spark(self.spark, events, state, params, schedule, self.batch_id, m, self.ctx.store,
                              n_items=n_items)
        res.loss = D.mean_loss([s["loss"] for s in out.stats])
        res.lr = float(out.stats[-1]["lr"]) if out.stats else float("nan")
        res.seconds_train = time.perf_counter() - t

        t = time.perf_counter()
        bad = divergence_of_rows(out, cfg.stream.max_abs_factor)
        if bad:
            self.reject(state, batch, bad)
        else:
            res.users_touched, res.items_touched = out.n_users, out.n_items
            meta = D.trained_meta(state.meta, stream_id=self.stream_id, ends=batch.ends, epochs_run=len(out.stats),
                                  schedule_state=schedule.base.to_state(), n_events=len(ev), mu=mu, res=res)
            meta.update(n_users=n_users + res.new_users, n_items=n_items + res.new_items)
            self.commit(state, *out.spark_rows(self.spark), meta)
        res.seconds_write = time.perf_counter() - t

    def _n_rows(self, state: ModelState, side: str) -> int:
        """Users or items of the model: kept in the metadata by every commit (counted for an older table)."""
        key = "n_users" if side == C.SIDE_USER else "n_items"
        if key in state.meta:
            return int(state.meta[key])
        return self.ctx.store.load(side, version=state.version).count()

    def evaluate(self, ev: pd.DataFrame, state: ModelState, n_items: int) -> None:
        s, m = self.cfg.stream, self.cfg.model
        if s.eval_max_events <= 0 or n_items == 0:  # evaluation off, or no model yet (the first batch)
            return
        size = sample_size(s.eval_max_events, s.eval_max_scores, n_items)
        sample = sample_events(ev, size, mix_seed(m.seed, self.batch_id))
        if state.users is not None:
            out = evaluate_batch(sample, users=state.users, items=state.items, k=s.eval_k)
        else:
            out = evaluate_batch_spark(self.spark, sample, store=self.ctx.store, version=state.version, rank=m.rank,
                                       k=s.eval_k, max_driver_rows=m.local_max_rows)
        self.res.dcg, self.res.dcg_popularity, self.res.dcg_events = out["dcg"], out["dcg_popularity"], out["dcg_events"]

    def reject(self, state: ModelState, batch: ParsedBatch, why: str) -> None:
        """A divergent batch: nothing of its factors is written; the metadata records an alert."""
        self.ctx.cache.drop()  # the in-memory model saw the bad update: re-read the last good one
        self.res.rejected = True
        self.res.add_alert(f"divergence: {why}; batch rejected, previous model kept")
        log.warning("batch %d: %s", self.batch_id, self.res.alert)
        meta = D.rejected_meta(state.meta, stream_id=self.stream_id, ends=batch.ends, res=self.res)
        self.wait_appends()
        self.ctx.store.write(None, None, meta=meta, batch_id=self.batch_id, app_id=self.app,
                             force=state.meta.get("stream_id") != self.stream_id)

    def commit(self, state: ModelState, users: DataFrame | None, items: DataFrame | None, meta: dict[str, Any]) -> None:
        """One commit of the changed rows + metadata; keep the cached model only if it is the next one."""
        self.wait_appends()
        force = state.meta.get("stream_id") != meta.get("stream_id", state.meta.get("stream_id"))
        wrote = self.ctx.store.write(users, items, meta=meta, batch_id=self.batch_id, app_id=self.app,
                                     force=force, expected=state.head)
        self.ctx.cache.after_commit(state, self.ctx.store.last_written if wrote else None)

    # ---- record ---------------------------------------------------------------------------------
    def record(self) -> None:
        res, ctx = self.res, self.ctx
        res.seconds_total = time.perf_counter() - self.t0
        res.rows_per_s = res.rows_in / res.seconds_total if res.seconds_total > 0 else 0.0
        row = res.row()
        mrow = self.spark.createDataFrame([tuple(row[c.split()[0]] for c in D.METRICS_SCHEMA.split(", "))],
                                          D.METRICS_SCHEMA).withColumn("written_at", F.current_timestamp())
        # only the first batch after a (re)start can be a replay whose metrics row is already in
        if ctx.check_replay and row_exists(self.spark, ctx.tables.metrics, (F.col("stream_id") == self.stream_id)
                                           & (F.col("batch_id") == self.batch_id)):
            log.info("batch %d: its metrics row is already in", self.batch_id)
        else:
            append_once(mrow, ctx.tables.metrics, app_id=f"{self.app}-metrics", version=self.batch_id, txn=False)
        ctx.check_replay = False
        ctx.fault("after_metrics", self.batch_id)
        ctx.results.append(res)
        log.info(D.log_line(res, self.cfg.stream.eval_k))
