"""Appending a batch's events and quarantined records, in a background thread, at most once.

The appends overlap with evaluation and training and are joined before the factor commit (events are
in Delta before the factors that learnt from them). Events go in as a plain append: Delta's
transaction-id lookup rebuilds the table state on every commit, and only the first batch after a
(re)start can be a replay, so for that batch alone the first event is looked up first (by stream
position, user, item and time; Delta's file statistics on ``seq`` keep the lookup to a file or two).
Quarantined records (rare) use the transactional append.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.store.tables import EVENTS_PARTITION, Tables, append_once, row_exists
from streaming.events import quarantined

log = logging.getLogger("dsgd.stream")


def events_written(spark: SparkSession, path: str, first: dict[str, Any]) -> bool:
    """Whether the batch whose first valid event is ``first`` is already in the events table."""
    return row_exists(spark, path, (F.col(C.SEQ) == int(first[C.SEQ])) & (F.col(C.TS) == int(first[C.TS]))
                      & (F.col(C.USER) == str(first[C.USER])) & (F.col(C.ITEM) == str(first[C.ITEM])))


class BatchAppends:
    """The background appends of one batch; :meth:`wait` joins them and re-raises their error."""

    def __init__(self, tables: Tables, *, app: str, batch_id: int) -> None:
        self.tables, self.app, self.batch_id = tables, app, batch_id
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, parsed: DataFrame, events: DataFrame, *, first: dict[str, Any] | None,
              n_quarantined: int, check_replay: bool) -> BatchAppends:
        def work() -> None:
            try:
                self._append(parsed, events, first, n_quarantined, check_replay)
            except BaseException as exc:  # re-raised in the batch's thread
                self._error = exc

        self._thread = threading.Thread(target=work, name=f"dsgd-append-{self.batch_id}", daemon=True)
        self._thread.start()
        return self

    def _append(self, parsed: DataFrame, events: DataFrame, first: dict[str, Any] | None, n_quarantined: int,
                check_replay: bool) -> None:
        spark = events.sparkSession
        if first is not None:
            if check_replay and events_written(spark, self.tables.events, first):
                log.info("batch %d: its events are already in", self.batch_id)
            else:
                append_once(events, self.tables.events, app_id=f"{self.app}-events", version=self.batch_id,
                            partition_by=EVENTS_PARTITION, txn=False)
        if n_quarantined:
            append_once(quarantined(parsed).withColumn("batch_id", F.lit(self.batch_id).cast("long"))
                        .withColumn("quarantined_at", F.current_timestamp()),
                        self.tables.quarantine, app_id=f"{self.app}-quarantine", version=self.batch_id)

    def wait(self) -> None:
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
