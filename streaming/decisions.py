"""The pure decisions of a micro-batch: what it did (the ``metrics`` row), whether it is a replay,
how many records were lost, whether its factors diverged, and the model metadata it commits.

Nothing here touches Spark, Delta or Kafka, so every rule is unit-tested without a JVM
(tests/unit/test_stream_decisions.py); the steps in :mod:`streaming.pipeline` call these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class BatchResult:
    """What one micro-batch did; also the row appended to the ``metrics`` table (:data:`METRICS_SCHEMA`)."""

    batch_id: int
    stream_id: str
    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: str = "{}"
    dcg: float = float("nan")
    dcg_popularity: float = float("nan")
    dcg_events: int = 0
    loss: float = float("nan")
    lr: float = float("nan")
    users_touched: int = 0
    items_touched: int = 0
    new_users: int = 0
    new_items: int = 0
    rows_per_s: float = 0.0
    lag_records: int = -1
    lag_ms: int = -1
    offsets: str = "{}"
    seconds_parse: float = 0.0
    seconds_eval: float = 0.0
    seconds_train: float = 0.0
    seconds_write: float = 0.0
    seconds_total: float = 0.0
    records_lost: int = 0
    rejected: bool = False
    replayed: bool = False
    alert: str = ""

    def row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def scalars(self) -> dict[str, Any]:
        """The fields stored in the model metadata (``last_result``), to replay the row after a crash."""
        return {k: v for k, v in self.row().items() if isinstance(v, int | float | str | bool)}

    def add_alert(self, text: str) -> None:
        self.alert = "; ".join(a for a in (self.alert, text) if a)


_SQL_TYPES = {int: "long", float: "double", str: "string", bool: "boolean"}

#: Schema of the ``metrics`` table, derived from :class:`BatchResult` (plus ``written_at``, set on write).
METRICS_SCHEMA = ", ".join(f"{name} {_SQL_TYPES[t]}" for name, t in get_type_hints(BatchResult).items())

#: Fields of a stored ``last_result`` that a replayed batch does not take over (they describe this run).
_NOT_REPLAYED = ("replayed", "seconds_total", "stream_id", "batch_id")


def offsets_of(rows: pa.Table) -> dict[str, list[int]]:
    """``{"topic:partition": [first offset, last offset]}`` of a batch's records (Arrow columns topic,
    partition, offset)."""
    g = rows.group_by(["topic", "partition"]).aggregate([("offset", "min"), ("offset", "max")]).to_pylist()
    return {f"{r['topic']}:{r['partition']}": [int(r["offset_min"]), int(r["offset_max"])] for r in g}


def records_lost(previous_ends: dict[str, int], offsets: dict[str, list[int]]) -> int:
    """Records skipped between the previous batch's last offset and this batch's first, per partition
    (Kafka deleted them before they were read; only possible with ``kafka.fail_on_data_loss = false``)."""
    lost = 0
    for part, (lo, _hi) in offsets.items():
        prev = previous_ends.get(part)
        if prev is not None and lo > prev + 1:
            lost += lo - prev - 1
    return lost


def already_applied(meta: dict[str, Any], stream_id: str, batch_id: int) -> bool:
    """Whether the model already holds this batch of this stream: Spark replays a batch after a crash
    with the same id, and the factor commit records the last batch id in the same commit."""
    return meta.get("stream_id") == stream_id and int(meta.get("last_batch", -1)) >= batch_id


def replay_result(res: BatchResult, meta: dict[str, Any], batch_id: int) -> None:
    """Take over the figures the crashed run stored with the factors, so the replayed metrics row is
    the one the uninterrupted run would have written."""
    stored = meta.get("last_result", {}) if int(meta.get("last_batch", -1)) == batch_id else {}
    for k, v in stored.items():
        if hasattr(res, k) and k not in _NOT_REPLAYED:
            setattr(res, k, v)
    res.replayed = True


def divergence_reason(nonfinite: bool, peak: float, limit: float) -> str:
    """Why a batch's changed factor rows must not be committed ("" when they are fine)."""
    if nonfinite:
        return "non-finite factors"
    return f"factor magnitude {peak:.3g} > stream.max_abs_factor {limit:g}" if peak > limit else ""


def divergence(vec: np.ndarray, bias: np.ndarray, limit: float) -> str:
    """:func:`divergence_reason` of changed rows given as arrays."""
    if vec.size == 0 and bias.size == 0:
        return ""
    nonfinite = not (np.isfinite(vec).all() and np.isfinite(bias).all())
    peak = 0.0 if nonfinite else max(float(np.abs(vec).max(initial=0.0)), float(np.abs(bias).max(initial=0.0)))
    return divergence_reason(nonfinite, peak, limit)


def offsets_end(meta: dict[str, Any], stream_id: str, ends: dict[str, int]) -> dict[str, int]:
    """The last offset read per partition after this batch (the previous ones of the same stream kept)."""
    before = meta.get("offsets_end", {}) if meta.get("stream_id") == stream_id else {}
    return {**before, **ends}


def trained_meta(meta: dict[str, Any], *, stream_id: str, ends: dict[str, int], epochs_run: int,
                 schedule_state: dict[str, Any], n_events: int, mu: float, res: BatchResult) -> dict[str, Any]:
    """The metadata committed with a trained batch's factors."""
    return {"stream_id": stream_id, "steps": int(meta.get("steps", 0)) + epochs_run, "schedule": schedule_state,
            "offsets_end": offsets_end(meta, stream_id, ends), "n_ratings": int(meta.get("n_ratings", 0)) + n_events,
            "mu": mu, "last_result": res.scalars()}


def rejected_meta(meta: dict[str, Any], *, stream_id: str, ends: dict[str, int], res: BatchResult
                  ) -> dict[str, Any]:
    """The metadata committed for a rejected (divergent) batch: offsets and an alert move on, the
    factors and the learning-rate schedule stay where they were."""
    return {"stream_id": stream_id, "steps": int(meta.get("steps", 0)), "schedule": meta.get("schedule"),
            "offsets_end": offsets_end(meta, stream_id, ends), "alerts": int(meta.get("alerts", 0)) + 1,
            "last_result": res.scalars()}


def empty_meta(meta: dict[str, Any], *, stream_id: str, ends: dict[str, int]) -> dict[str, Any]:
    """The metadata committed for a batch without valid events (only its offsets move on)."""
    return {"stream_id": stream_id, "last_result": {}, "offsets_end": offsets_end(meta, stream_id, ends)}


def running_mean(mu: float, n_old: int, ratings: np.ndarray) -> float:
    """The global mean rating after ``ratings`` were added to ``n_old`` earlier ones."""
    return (mu * n_old + float(np.asarray(ratings, np.float64).sum())) / (n_old + len(ratings))


def mean_loss(epoch_losses: list[float]) -> float:
    """Mean of the epochs' losses, NaN when every epoch's loss is NaN (a diverged batch)."""
    losses = np.asarray(epoch_losses, dtype=float)
    known = losses[~np.isnan(losses)]
    return float(known.mean()) if known.size else float("nan")


def quarantine_summary(reasons: pa.Array | pa.ChunkedArray) -> str:
    """JSON ``{reason: count}`` of a batch's quarantined records (nulls, the valid ones, not counted)."""
    counts = pc.value_counts(pc.drop_null(reasons)).to_pylist()
    return json.dumps({str(c["values"]): int(c["counts"]) for c in counts}, sort_keys=True)


_AGE_UNITS = ((90.0, 1.0, "s"), (90 * 60.0, 60.0, " min"), (48 * 3600.0, 3600.0, " h"),
              (730 * 86400.0, 86400.0, " days"))


def human_age(seconds: float) -> str:
    """``seconds`` in the unit a reader takes in at a glance: ``4.2s``, ``12.5 min``, ``3.0 h``,
    ``40.0 days``, ``28.6 years`` (a replay of old data has an event age of years)."""
    if seconds != seconds:  # NaN: no event time known
        return "n/a"
    for limit, unit, name in _AGE_UNITS:
        if abs(seconds) < limit:
            return f"{seconds / unit:.1f}{name}"
    return f"{seconds / (365.25 * 86400):.1f} years"


def _event_age(res: BatchResult) -> str:
    return human_age(res.lag_ms / 1000) if res.lag_ms >= 0 else "n/a (no valid event)"


def log_line(res: BatchResult, k: int) -> str:
    """The one line a batch logs (see the README's example)."""
    evald = (f"dcg@{k}={res.dcg:.4f} (pop {res.dcg_popularity:.4f}, {res.dcg_events} events)"
             if res.dcg_events else "dcg: no model yet (first batch) or evaluation off")
    return (f"batch {res.batch_id}: rows={res.rows_in} valid={res.rows_valid} quarantined={res.rows_quarantined} "
            f"{res.rows_per_s:.0f} rows/s lag={res.lag_records} rec, event age {_event_age(res)} "
            f"{evald} loss={res.loss:.4f} users={res.users_touched} items={res.items_touched} | parse "
            f"{res.seconds_parse:.2f}s eval {res.seconds_eval:.2f}s train {res.seconds_train:.2f}s write "
            f"{res.seconds_write:.2f}s total {res.seconds_total:.2f}s"
            + (" REPLAY" if res.replayed else "") + (f" ALERT {res.alert}" if res.alert else ""))
