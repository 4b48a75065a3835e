"""Item 8: the weekly retrain's swap (batch/blend.py) and the stream commit to ``factors`` at the same time;
conflicts are retried and the final state is that of a serial order: no stream update lost or doubled."""

from __future__ import annotations

import threading

import pytest
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.store.factor_store import FactorStore
from streaming.trainer import StreamTrainer
from tests.faults.helpers import implicit_values, metrics, produce_raw, stream_cfg, wait_for
from tests.kafka.stream_helpers import assert_same_factors, factors, known_stream

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def test_retrain_swap_concurrent_with_the_stream_keeps_every_batch_update(spark, kafka_broker, topic, cfg, tmp_path):
    from batch.blend import swap

    df = known_stream(1000, seed=23)
    first, second = df.iloc[:400], df.iloc[400:]  # 4 batches before the retrain starts, 6 next to it
    produce_raw(kafka_broker.bootstrap, topic, implicit_values(first))
    opts = {"kafka": {"max_offsets_per_trigger": 100}}
    clean = stream_cfg(cfg, topic, tmp_path / "clean", **opts)
    live = stream_cfg(cfg, topic, tmp_path / "live", **opts)
    assert StreamTrainer(spark, clean).run(timeout_s=300) == 0
    assert StreamTrainer(spark, live).run(timeout_s=300) == 0
    produce_raw(kafka_broker.bootstrap, topic, implicit_values(second))
    assert StreamTrainer(spark, clean).run(timeout_s=400) == 0  # the serial reference: stream only

    # The second writer: the retrain's swap of a batch model computed at `base` (here the live model at
    # base itself, so every serial order of swap and stream batches gives the stream-only factors; a lost,
    # doubled or half-rebased stream update shows up as a difference). Its own session: its Delta
    # session settings must not mix with the stream's.
    other = spark.newSession()
    store = FactorStore(other, f"{live.app.warehouse}/factors")
    base = store.version()
    snap = store.current(base).where(F.col(C.SIDE) != C.SIDE_META).localCheckpoint()
    users = snap.where(F.col(C.SIDE) == C.SIDE_USER)
    items = snap.where(F.col(C.SIDE) == C.SIDE_ITEM)
    swaps: list = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def retrainer() -> None:
        try:
            while not stop.is_set():
                swaps.append(swap(other, store, users, items, base_version=base,
                                  meta={"blend_policy": "fault-suite", "snapshot_id": f"s{len(swaps)}"},
                                  retries=40))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    trainer = StreamTrainer(spark, live.replace(stream={"trigger": "processing_time", "trigger_interval": "1 second"}))
    query = trainer.start()
    thread = threading.Thread(target=retrainer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sum(r.rows_in for r in trainer.results) >= len(second) or not query.isActive, 400,
                 "the stream to take in the second part")
    finally:
        stop.set()
        thread.join(300)
        if query.isActive:
            query.stop()
    assert query.exception() is None, str(query.exception())[:2000]
    assert not errors, errors
    assert swaps, "the retrain never committed"
    print(f"swaps: {len(swaps)}, attempts {[s.attempts for s in swaps]}, rebased rows {[s.rows_rebased for s in swaps]}")

    assert_same_factors(factors(spark, clean.app.warehouse), factors(spark, live.app.warehouse))
    m = metrics(spark, live)
    assert m["batch_id"].is_unique and m["rows_in"].sum() == len(df)
    assert sorted(m["batch_id"]) == sorted(metrics(spark, clean)["batch_id"])
    meta = store.meta()
    assert meta["blend_policy"] == "fault-suite" and meta["last_batch"] == int(m["batch_id"].max())
