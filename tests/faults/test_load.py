"""Item 10: a sustained offered rate; consumer lag stays bounded and driver / worker memory stays flat."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from dsgd.evaluation.synthetic import generate_stream
from streaming.trainer import StreamTrainer
from tests.faults.helpers import children, cmdline, implicit_values, metrics, rss_mb, stream_cfg

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

RATE = 400.0  # events/s offered
# CI offers load for 50 s (the suite's time budget); DSGD_LOAD_SECONDS=300 is the several-minute run
# recorded in bench/RESULTS.md
SECONDS = float(os.environ.get("DSGD_LOAD_SECONDS", "50"))
TRIGGER_S = 3


def _producer(bootstrap: str, topic: str, values: list[bytes], sent: list[int]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    start, n, total = time.monotonic(), 0, int(RATE * SECONDS)
    while n < total:
        wait = start + n / RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for _ in range(min(20, total - n)):
            producer.send(topic, key=b"k", value=values[n % len(values)])
            n += 1
    producer.flush()
    producer.close()
    sent.append(n)


def _live_heap_mb(spark) -> float:
    """The driver JVM's heap in use right after a full GC: its live set (RSS only shows what the heap
    has grown to, which the JVM does lazily up to -Xmx and rarely gives back)."""
    bean = spark._jvm.java.lang.management.ManagementFactory.getMemoryMXBean()
    bean.gc()
    return bean.getHeapMemoryUsage().getUsed() / 2**20


def _memory(spark) -> dict[str, float]:
    me = os.getpid()
    jvm = [p for p in children(me) if "SparkSubmit" in cmdline(p) or "pyspark-shell" in cmdline(p)]
    assert len(jvm) == 1, "the driver JVM was not found"
    workers = []
    for p in (p for p in children(jvm[0]) if "python" in cmdline(p)):
        try:
            workers.append(rss_mb(p))
        except FileNotFoundError:  # an idle worker that exited between the listing and the read
            continue
    return {"driver_python": rss_mb(me), "driver_jvm_rss": rss_mb(jvm[0]),
            "driver_jvm_live_heap": _live_heap_mb(spark), "python_workers": sum(workers),
            "python_worker_count": len(workers)}


def test_sustained_load_keeps_lag_bounded_and_memory_flat(spark, kafka_broker, topic, cfg, tmp_path):
    df = generate_stream(int(RATE * SECONDS), n_users=3000, n_items=800, seed=31, duration_days=3.0)
    values = implicit_values(df)
    c = stream_cfg(cfg, topic, tmp_path, kafka={"max_offsets_per_trigger": 0},
                   stream={"trigger": "processing_time", "trigger_interval": f"{TRIGGER_S} seconds",
                           "eval_max_events": 500, "maintenance_every": 3})
    trainer = StreamTrainer(spark, c)
    query = trainer.start()
    sent: list[int] = []
    samples: list[dict[str, float]] = []
    prod = threading.Thread(target=_producer, args=(kafka_broker.bootstrap, topic, values, sent), daemon=True)
    t0 = time.monotonic()
    prod.start()
    try:
        deadline = None
        # memory is sampled every 5 s while the load is offered and while the stream catches up, from the
        # end of the 4th batch on (before it: JIT compilation, first model load, the first maintenance pass,
        # the allocators' growth); a pass every 3 batches puts passes in both halves
        while query.isActive and (prod.is_alive() or sum(r.rows_in for r in trainer.results) < sum(sent)):
            if not prod.is_alive() and deadline is None:
                deadline = time.monotonic() + 180
            if deadline is not None and time.monotonic() > deadline:
                break
            if len(trainer.results) >= 4 and (not samples or time.monotonic() - t0 - samples[-1]["t"] >= 5):
                samples.append({"t": time.monotonic() - t0, "batches": len(trainer.results), **_memory(spark)})
            time.sleep(1)
        caught_up_s = time.monotonic() - t0 - SECONDS
    finally:
        if query.isActive:
            query.stop()
    assert query.exception() is None, str(query.exception())[:2000]
    m = metrics(spark, c)
    assert m["rows_in"].sum() == sum(sent) == len(values)
    lag = m["lag_records"].to_numpy()
    durations = m["seconds_total"].to_numpy()
    assert len(samples) >= 6 and samples[-1]["batches"] > samples[0]["batches"], samples
    half = len(samples) // 2
    # one sample taken while a batch holds its working set must not decide the verdict: medians of the
    # RSS; the live heap's floor (its minimum), since a batch in flight only adds to what is retained
    # (measured: samples of 90-130 MB with single ones of 175-220 MB mid-batch)
    mem = {k: tuple(float((np.min if k == "driver_jvm_live_heap" else np.median)([s[k] for s in part]))
                    for part in (samples[:half], samples[half:]))
           for k in ("driver_python", "driver_jvm_rss", "driver_jvm_live_heap", "python_workers")}
    report = {"offered_eps": RATE, "seconds": SECONDS, "events": int(sum(sent)), "batches": len(m),
              "lag_records_p50": float(np.median(lag)), "lag_records_max": int(lag.max()),
              "batch_seconds_p50": float(np.median(durations)), "batch_seconds_max": float(durations.max()),
              "caught_up_after_s": round(caught_up_s, 1),
              "rss_mb_first_half_vs_second_half": {k: [round(a), round(b)] for k, (a, b) in mem.items()},
              "rss_mb_samples": [{k: round(v, 1) for k, v in s.items()} for s in samples]}
    print("LOAD " + json.dumps(report))
    (tmp_path / "load.json").write_text(json.dumps(report, indent=2))
    # lag bounded: every batch took in all that had arrived when it started, so the records waiting at its
    # probe are at most those offered while it read its own (its parse phase, plus up to 2 s of planning
    # between Spark fixing its offsets and the batch starting, plus one producer burst)
    parse = m["seconds_parse"].to_numpy()
    assert (lag >= 0).all(), ("the consumer-lag probe failed", report)
    assert (lag <= RATE * (parse + 2.0) + 20).all(), report
    assert lag[-1] <= RATE * TRIGGER_S and caught_up_s < 60, report
    # memory flat: the second half's median is within 32 MB of the first's for the Python processes
    # (measured: +3 to +6 MB), and within 25 % for the JVM's live heap after GC (measured: +1 to +17 %,
    # the UI's retained jobs and Delta's log cache filling); the JVM's RSS is reported, not judged (it
    # follows heap growth up to -Xmx, not retained objects)
    assert all(s["python_worker_count"] > 0 for s in samples), "no Python worker found: nothing was measured"
    for k, (a, b) in mem.items():
        if k == "driver_jvm_live_heap":
            assert b <= 1.25 * a, (k, report)
        elif k in ("driver_python", "python_workers"):
            assert b <= a + 32, (k, report)
