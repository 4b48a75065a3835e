"""Replay a data set or a synthetic stream into a Kafka topic, in event-time order, keyed by user.

Pacing: ``rate`` events per second, or ``speedup`` (time compression: 3600 replays an hour of event
time per second of wall time), or as fast as possible when neither is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import pandas as pd

from dsgd.core import columns as C
from dsgd.evaluation.synthetic import to_json_lines

log = logging.getLogger("dsgd.produce")


def produce_events(df: pd.DataFrame, *, bootstrap: str, topic: str, rate: float | None = None,
                   speedup: float | None = None, extra_values: Iterable[bytes] = (), progress: bool = False,
                   linger_ms: int = 20) -> int:
    """Send ``df`` (common event schema, sorted by time) to ``topic``; return the number of records sent.

    ``extra_values`` are raw values appended after the events (e.g. bad records in tests).
    """
    from kafka import KafkaProducer

    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    if speedup is not None and speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    df = df.sort_values([C.TS, C.SEQ] if C.SEQ in df.columns else [C.TS], kind="stable")
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks="all",
                             batch_size=256 * 1024, compression_type=None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(df), unit="ev", desc=f"produce {topic}", mininterval=1.0)
    start = time.monotonic()
    t_first = int(df[C.TS].iloc[0]) if len(df) else 0
    sent = 0
    try:
        for (user, ts), value in zip(zip(df[C.USER], df[C.TS], strict=True), to_json_lines(df), strict=True):
            if rate is not None:
                due = start + sent / rate
            elif speedup is not None:
                due = start + (int(ts) - t_first) / 1000.0 / speedup
            else:
                due = None
            if due is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            producer.send(topic, key=str(user).encode(), value=value)
            sent += 1
            if bar is not None and sent % 1000 == 0:
                bar.update(1000)
        for value in extra_values:
            producer.send(topic, key=b"bad", value=value)
            sent += 1
        producer.flush()
    finally:
        producer.close()
        if bar is not None:
            bar.update(len(df) - bar.n)
            bar.close()
    log.info("produced %d records to %s in %.1fs", sent, topic, time.monotonic() - start)
    return sent
