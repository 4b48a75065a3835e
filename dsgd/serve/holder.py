"""Hot reload: poll the tables' versions, load a new version beside the served one, swap atomically.

One background thread (:meth:`Holder.run`) polls every ``serve.poll_interval_s``: the ``factors`` table
(and, under score-blend, the snapshot its metadata names), the ``events`` table (seen sets) and the
optional items table (availability). A changed table is loaded into new objects while requests keep
reading the old :class:`~dsgd.serve.state.Served`; when everything is loaded, one reference assignment
(atomic in Python) swaps the new state in. A load that fails is logged and counted
(``dsgd_serve_reload_failures_total{table=...}``); the old state keeps serving and the version is
retried with a backoff (up to a minute) or as soon as a newer version appears.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dsgd.core import columns as C
from dsgd.core.blend import snapshot_as_of
from dsgd.core.config import Config
from dsgd.serve.delta_read import Table
from dsgd.serve.loader import (
    FullLoadNeeded,
    LoadedFactors,
    Snapshot,
    load_full,
    load_incremental,
    load_snapshot,
)
from dsgd.serve.metrics import Metrics
from dsgd.serve.seen import SeenSets, pair_keys, seen_predicate
from dsgd.serve.state import Served

log = logging.getLogger("dsgd.serve")


def warehouse_root(cfg: Config) -> str:
    """The warehouse the server reads (``serve.warehouse``, else ``app.warehouse``), no trailing slash."""
    return (cfg.serve.warehouse or cfg.app.warehouse).rstrip("/")


class Holder:
    """The served state (:attr:`state`, None until the first model loads) and the reloader that swaps it."""

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        root = warehouse_root(cfg)
        opts = {str(k): str(v) for k, v in cfg.serve.storage_options.items()}
        self.factors_table = Table(f"{root}/factors", opts)
        self.snapshots_table = Table(f"{root}/snapshots", opts)
        self.events_table = Table(f"{root}/events", opts)
        self.items_table = Table(cfg.serve.items_table, opts) if cfg.serve.items_table else None
        self.state: Served | None = None
        self.metrics = metrics or Metrics(lambda: self.state)
        self._factors: LoadedFactors | None = None
        self._snapshot: Snapshot | None = None
        self._commit_time: float | None = None
        self._seen = SeenSets(max_pairs=cfg.serve.seen_max_pairs)
        self._seen_at: tuple[int, str | None] | None = None  # (events version, window predicate) read
        self._listed = set(cfg.serve.unavailable_items)
        self._unavailable: set[str] = set(self._listed)
        self._items_version: int | None = None
        self._failed: dict[str, tuple[int, float, float]] = {}  # table -> (version, retry at, backoff)
        self._pending: dict[str, int] = {}  # table -> the version being loaded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    # ---- polling ------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """One poll of every table; True if a new state was swapped in."""
        changed = False
        for table, step in (("factors", self._refresh_factors), ("events", self._refresh_seen),
                            ("items", self._refresh_items)):
            changed |= self._guarded(table, step)  # each swaps at once: a new model does not wait for the seen sets
        return changed

    def _swap(self) -> None:
        new = Served.build(self.cfg, self._factors, self._snapshot, self._seen, self._unavailable,
                           self._commit_time, previous=self.state)
        new.model.prepare(self.cfg.serve.screen_min_items)  # derived arrays here, not in the first requests
        self.state = new  # the swap: one reference assignment
        self.reloads += 1

    _PARTS = ("_factors", "_snapshot", "_commit_time", "_seen", "_seen_at", "_unavailable", "_items_version")

    def _guarded(self, table: str, step: Callable[[], tuple[int, str, float] | None]) -> bool:
        """Run one table's load and swap the state in; on any failure restore what was loaded before."""
        saved = {name: getattr(self, name) for name in self._PARTS}
        try:
            done = step()
            if done is not None and self._factors is not None:
                self._swap()
        except Exception as exc:  # a bad version must never take the served model down
            for name, value in saved.items():
                setattr(self, name, value)
            version = self._pending.get(table, -1)
            prev = self._failed.get(table)
            backoff = min(60.0, prev[2] * 2) if prev and prev[0] == version else self.cfg.serve.poll_interval_s
            self._failed[table] = (version, time.monotonic() + backoff, backoff)
            self.metrics.reload_failures.labels(table).inc()
            log.error("serve: loading %s version %s failed (still serving the previous state; retry in %.0fs): %s: %s",
                      table, version, backoff, type(exc).__name__, exc)
            return False
        if done is None:
            return False
        version, kind, seconds = done
        self._failed.pop(table, None)
        self.metrics.reloads.labels(table, kind).inc()
        self.metrics.reload_seconds.labels(table).observe(seconds)
        log.info("serve: %s version %d loaded (%s) in %.3fs", table, version, kind, seconds)
        return True

    def _due(self, table: str, version: int) -> bool:
        """False while ``version`` of ``table`` failed recently (its backoff has not passed)."""
        self._pending[table] = version
        failed = self._failed.get(table)
        return failed is None or failed[0] != version or time.monotonic() >= failed[1]

    def _refresh_factors(self) -> tuple[int, str, float] | None:
        v = self.factors_table.latest_version()
        if v is None or (self._factors is not None and v == self._factors.version) or not self._due("factors", v):
            return None
        t0 = time.perf_counter()
        kind = "full"
        if self._factors is None:
            new = load_full(self.factors_table, v)
        else:
            try:
                new, kind = load_incremental(self.factors_table, self._factors, v), "incremental"
            except FullLoadNeeded as why:
                log.info("serve: full load of factors version %d: %s", v, why)
                new = load_full(self.factors_table, v)
        as_of = snapshot_as_of(new.meta)
        snap = self._snapshot if self._snapshot is not None and self._snapshot.as_of == as_of else None
        if as_of is not None and snap is None:
            snap = load_snapshot(self.snapshots_table, as_of, new.rank)
        self._factors, self._snapshot = new, snap
        self._commit_time = self.factors_table.commit_time(v)
        return v, kind, time.perf_counter() - t0

    def _refresh_seen(self) -> tuple[int, str, float] | None:
        v = self.events_table.latest_version()
        window = seen_predicate(self.cfg.serve.seen_days, int(time.time() * 1000))
        if v is None or (v, window) == self._seen_at or not self._due("events", v):
            return None
        t0 = time.perf_counter()
        before = self._seen
        kind = "full"
        if self._seen_at is not None and self._seen_at[1] == window:
            rows, kinds = self.events_table.changes(self._seen_at[0], v, [C.USER, C.ITEM], window)
            if not kinds - {"insert"}:
                self._seen, kind = before.add(*pair_keys(rows.column(C.USER), rows.column(C.ITEM))), "incremental"
        if kind == "full":
            rows = self.events_table.scan(v, [C.USER, C.ITEM], window)
            self._seen = SeenSets(max_pairs=self.cfg.serve.seen_max_pairs).add(
                *pair_keys(rows.column(C.USER), rows.column(C.ITEM)))
        dropped = self._seen.dropped - (before.dropped if kind == "incremental" else 0)
        if dropped > 0:
            self.metrics.seen_dropped.inc(dropped)
        self._seen_at = (v, window)
        return v, kind, time.perf_counter() - t0

    def _refresh_items(self) -> tuple[int, str, float] | None:
        if self.items_table is None:
            return None
        v = self.items_table.latest_version()
        if v is None or v == self._items_version or not self._due("items", v):
            return None
        t0 = time.perf_counter()
        rows = self.items_table.scan(v, [C.ITEM, "available"])
        avail = rows.column("available").to_pylist()
        off = {str(i) for i, a in zip(rows.column(C.ITEM).to_pylist(), avail, strict=True) if a is False}
        self._unavailable, self._items_version = self._listed | off, v
        return v, "full", time.perf_counter() - t0

    # ---- the thread ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Poll until :meth:`stop` (the first poll at once)."""
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.cfg.serve.poll_interval_s)

    def start(self) -> Holder:
        self._thread = threading.Thread(target=self.run, name="dsgd-serve-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
