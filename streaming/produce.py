"""Replay a data set or a synthetic stream into a Kafka topic, in event-time order, keyed by user.

Pacing: ``rate`` events per second, or ``speedup`` (time compression: 3600 replays an hour of event
time per second of wall time), or as fast as possible when neither is given.

Every record is checked with the event contract's reference (:func:`dsgd.core.contract.parse_event`,
with the model's kind and rating bounds) before it is sent: a row that breaks it is not sent; it is
counted per reason, and the first few are kept for the report (:class:`Produced`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from dsgd.core import columns as C
from dsgd.core.contract import parse_event
from dsgd.evaluation.synthetic import to_json_lines

log = logging.getLogger("dsgd.produce")

#: Invalid rows kept (row number, reason, value) for the report.
EXAMPLES_KEPT = 5


@dataclass
class Produced:
    """What ``produce_events`` did: records sent, and the rows it did not send because they break the
    event contract (count per reason, the first few as (row label of the input frame, reason, value))."""

    sent: int = 0
    invalid: Counter = field(default_factory=Counter)
    examples: list[tuple[object, str, bytes]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.invalid.values())

    def report(self) -> str:
        """One line per reason and per kept example, for people."""
        if not self.skipped:
            return "every row met the event contract"
        lines = [f"{self.skipped} rows break the event contract and were not sent: "
                 + ", ".join(f"{r}={n}" for r, n in sorted(self.invalid.items()))]
        lines += [f"  row {i}: {reason}: {value[:200]!r}" for i, reason, value in self.examples]
        return "\n".join(lines)


def produce_events(df: pd.DataFrame, *, bootstrap: str, topic: str, rate: float | None = None,
                   speedup: float | None = None, extra_values: Iterable[bytes] = (), progress: bool = False,
                   linger_ms: int = 20, explicit: bool = False, rating_min: float = float("-inf"),
                   rating_max: float = float("inf")) -> Produced:
    """Send the rows of ``df`` (common event schema, sorted by time) that meet the event contract to
    ``topic``; rows that break it are counted and not sent. ``explicit``, ``rating_min`` and
    ``rating_max`` are the model's (``model.kind == "explicit"``, ``model.rating_min/max``).

    ``extra_values`` are raw values appended after the events, sent unchecked (bad records in tests).
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
    out = Produced()
    now_ms = int(time.time() * 1000)  # stands in for an absent ts (to_json_lines always writes one)
    sent = 0
    try:
        rows = zip(df.index, df[C.USER], df[C.TS], to_json_lines(df), strict=True)
        for n, (row, user, ts, value) in enumerate(rows, 1):
            checked = parse_event(value, kafka_ts_ms=now_ms, explicit=explicit, rating_min=rating_min,
                                  rating_max=rating_max)
            if isinstance(checked, str):  # breaks the contract: counted, kept for the report, not sent
                out.invalid[checked] += 1
                if len(out.examples) < EXAMPLES_KEPT:
                    out.examples.append((row, checked, value))
                continue
            _pace(start, sent, int(ts) - t_first, rate, speedup)
            producer.send(topic, key=str(user).encode(), value=value)
            sent += 1
            if bar is not None and n % 1000 == 0:
                bar.update(n - bar.n)
        for value in extra_values:
            producer.send(topic, key=b"bad", value=value)
            sent += 1
        producer.flush()
    finally:
        producer.close()
        if bar is not None:
            bar.update(len(df) - bar.n)
            bar.close()
    out.sent = sent
    log.info("produced %d records to %s in %.1fs", sent, topic, time.monotonic() - start)
    if out.skipped:
        log.warning(out.report())
    return out


def _pace(start: float, sent: int, event_ms: int, rate: float | None, speedup: float | None) -> None:
    """Sleep until the next record is due: ``rate`` records per second, or event time / ``speedup``."""
    if rate is not None:
        due = start + sent / rate
    elif speedup is not None:
        due = start + event_ms / 1000.0 / speedup
    else:
        return
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
