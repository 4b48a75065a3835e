"""The consumer-lag probe: records in Kafka after a batch's last offsets (informational)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("dsgd.stream")

#: Seconds the probe rests after it failed, so batches do not each wait for its timeout.
LAG_RETRY_S = 300.0


class LagProbe:
    """A plain kafka-python consumer on ``bootstrap``, asked for the end offsets after each batch.

    On a secured cluster (see ``kafka.options``) it cannot connect: the lag is then recorded as -1, one
    warning is logged and the probe is not tried again for :data:`LAG_RETRY_S`.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Any = None
        self._retry_at = 0.0

    def lag(self, offsets: dict[str, list[int]]) -> int:
        """Records after ``{"topic:partition": [lo, hi]}`` in Kafka now, -1 if the broker cannot be asked."""
        if time.monotonic() < self._retry_at:
            return -1
        if not offsets:
            return 0
        try:
            from kafka import TopicPartition

            tps = {part: TopicPartition(part.rsplit(":", 1)[0], int(part.rsplit(":", 1)[1])) for part in offsets}
            ends = self._client().end_offsets(list(tps.values()))
            return int(sum(max(0, ends[tps[part]] - hi - 1) for part, (_lo, hi) in offsets.items()))
        except Exception as exc:  # noqa: BLE001 - lag is informational
            self._retry_at = time.monotonic() + LAG_RETRY_S
            log.warning("consumer lag unavailable for the next %.0f s (recorded as -1): %s", LAG_RETRY_S,
                        _first_line(exc))
            return -1

    def missing_topics(self, topics: list[str]) -> list[str] | None:
        """Which of ``topics`` the broker does not host; ``None`` if it cannot be asked (Spark's source
        then reports what it finds)."""
        try:
            hosted = self._client().topics()
        except Exception as exc:  # noqa: BLE001 - the check is a courtesy; the query's own error follows
            log.warning("could not list the broker's topics (%s)", _first_line(exc))
            return None
        return [t for t in topics if t not in hosted]

    def _client(self) -> Any:
        """The one plain consumer of both questions, made on first use (no group, no auto-commit)."""
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                           request_timeout_ms=5000, api_version_auto_timeout_ms=5000)
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
