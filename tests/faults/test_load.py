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
# CI offers load for 75 s (the suite's time budget); DSGD_LOAD_SECONDS=300 is the several-minute run
# recorded in bench/RESULTS.md
SECONDS = float(os.environ.get("DSGD_LOAD_SECONDS", "75"))
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
    workers = [p for j in jvm for p in children(j) if "python" in cmdline(p)]
    return {"driver_python": rss_mb(me), "driver_jvm_rss": sum(rss_mb(p) for p in jvm),
            "driver_jvm_live_heap": _live_heap_mb(spark), "python_workers": sum(rss_mb(p) for p in workers)}


def test_sustained_load_keeps_lag_bounded_and_memory_flat(spark, kafka_broker, topic, cfg, tmp_path):
    df = generate_stream(int(RATE * SECONDS), n_users=3000, n_items=800, seed=31, duration_days=3.0)
    values = implicit_values(df)
    c = stream_cfg(cfg, topic, tmp_path, kafka={"max_offsets_per_trigger": 0},
                   stream={"trigger": "processing_time", "trigger_interval": f"{TRIGGER_S} seconds",
                           "eval_max_events": 500, "maintenance_every": 10})
    trainer = StreamTrainer(spark, c)
    query = trainer.start()
    sent: list[int] = []
    samples: list[dict[str, float]] = []
    prod = threading.Thread(target=_producer, args=(kafka_broker.bootstrap, topic, values, sent), daemon=True)
    t0 = time.monotonic()
    prod.start()
    try:
        while prod.is_alive() and query.isActive:
            samples.append({"t": time.monotonic() - t0, **_memory(spark)})
            time.sleep(5)
        deadline = time.monotonic() + 180
        while query.isActive and sum(r.rows_in for r in trainer.results) < sum(sent) and time.monotonic() < deadline:
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
    half = len(samples) // 2
    # medians: one sample taken while a batch holds its working set must not decide the verdict
    mem = {k: (float(np.median([s[k] for s in samples[1:half]])), float(np.median([s[k] for s in samples[half:]])))
           for k in ("driver_python", "driver_jvm_rss", "driver_jvm_live_heap", "python_workers")}
    report = {"offered_eps": RATE, "seconds": SECONDS, "events": int(sum(sent)), "batches": len(m),
              "lag_records_p50": float(np.median(lag)), "lag_records_max": int(lag.max()),
              "batch_seconds_p50": float(np.median(durations)), "batch_seconds_max": float(durations.max()),
              "caught_up_after_s": round(caught_up_s, 1),
              "rss_mb_first_half_vs_second_half": {k: [round(a), round(b)] for k, (a, b) in mem.items()},
              "rss_mb_samples": [{k: round(v, 1) for k, v in s.items()} for s in samples]}
    print("LOAD " + json.dumps(report))
    (tmp_path / "load.json").write_text(json.dumps(report, indent=2))
    # lag bounded: never more than ~8 triggers' worth of offered events behind, and caught up at the end
    assert lag.max() <= 8 * RATE * TRIGGER_S, report
    assert lag[-1] <= RATE * TRIGGER_S, report
    assert caught_up_s < 60, report
    # memory flat: the second half is not more than 25% (+64 MB slack) above the first; for the JVM
    # the live heap after GC (its RSS is reported only: it follows heap growth, not retained objects)
    for k, (a, b) in mem.items():
        if k == "driver_jvm_rss":
            continue
        assert b <= 1.25 * a + 64, (k, report)
