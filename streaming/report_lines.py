"""What a run says about itself beyond the per-batch line: the summary at its end and the idle heartbeat.

Pure functions of the batches' results (no Spark, no Kafka): ``tests/unit/test_stream_report_lines.py``.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from streaming.decisions import BatchResult


def run_summary(results: list[BatchResult], seconds: float, model_version: int | None, k: int) -> str:
    """One paragraph for the end of a finite run: events, batches, events/s, prequential DCG against
    popularity (means weighted by the events each batch evaluated), quarantine by reason and the
    factor table's version."""
    fresh = [r for r in results if not r.replayed]
    rows = sum(r.rows_in for r in fresh)
    valid = sum(r.rows_valid for r in fresh)
    reasons: Counter[str] = Counter()
    for r in fresh:
        reasons.update(json.loads(r.quarantine_reasons or "{}"))
    lines = [f"run summary: {len(results)} batches ({len(results) - len(fresh)} replayed), {rows} records in, "
             f"{valid} valid events, {rows / seconds if seconds > 0 else 0.0:.0f} records/s over {seconds:.1f}s"]
    evaluated = [r for r in fresh if r.dcg_events and math.isfinite(r.dcg)]
    n = sum(r.dcg_events for r in evaluated)
    if n:
        dcg = sum(r.dcg * r.dcg_events for r in evaluated) / n
        pop = sum(r.dcg_popularity * r.dcg_events for r in evaluated) / n
        lines.append(f"  prequential dcg@{k} {dcg:.4f} vs popularity {pop:.4f} over {n} events of "
                     f"{len(evaluated)} batches")
    elif not results:
        lines.append("  prequential dcg: no batch ran (the topic held nothing past the checkpoint's offsets)")
    else:
        lines.append("  prequential dcg: no batch was evaluated (the first batch meets no model yet; use "
                     "smaller batches, e.g. kafka.max_offsets_per_trigger, to evaluate one run's events)")
    if reasons:
        by = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines.append(f"  quarantined {sum(reasons.values())}: {by} (table quarantine, column reason)")
    else:
        lines.append("  quarantined 0")
    rejected = sum(r.rejected for r in fresh)
    if rejected:
        lines.append(f"  rejected {rejected} batches (divergence guard; see the metrics table's alert column)")
    lines.append(f"  model: factors table version {model_version}" if model_version is not None
                 else "  model: no factors table yet")
    return "\n".join(lines)


def heartbeat(idle_s: float, last: BatchResult | None, topic: str) -> str:
    """The line a continuous stream logs while no new events arrive."""
    if last is None:
        return f"idle {idle_s:.0f}s: waiting for the first events on topic {topic}"
    return (f"idle {idle_s:.0f}s: no new events on topic {topic} since batch {last.batch_id} "
            f"({last.rows_in} records, lag {last.lag_records} rec)")
