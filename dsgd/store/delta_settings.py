"""Session-wide Delta settings that one write needs, applied under one process-wide lock.

Delta reads some per-write settings from the SparkSession's SQL conf: the idempotent-DML transaction id
(``spark.databricks.delta.write.txnAppId`` / ``txnVersion``, which MERGE has no writer option for) and
VACUUM's retention guard. Every thread of a process shares that conf, so a commit running in another
thread while they are set would pick them up: it could record another writer's transaction id, or be
skipped as a duplicate of it. Code that sets such settings does it through :func:`delta_settings`, and
every Delta write that does not pass its own ``txnAppId``/``txnVersion`` writer options runs inside it
(with no settings), so no commit can see settings meant for another.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

WRITE_LOCK = threading.RLock()


@contextmanager
def delta_settings(spark: SparkSession, settings: dict[str, str] | None = None) -> Iterator[None]:
    """Hold the process-wide Delta write lock; set ``settings`` in the session conf while it is held.

    On exit every key gets back the value it had before (a user's own setting survives), or is unset.
    """
    with WRITE_LOCK:
        conf = spark.conf
        before = {key: conf.get(key, None) for key in settings or {}}
        for key, value in (settings or {}).items():
            conf.set(key, value)
        try:
            yield
        finally:
            for key, value in before.items():
                if value is None:
                    conf.unset(key)
                else:
                    conf.set(key, value)
