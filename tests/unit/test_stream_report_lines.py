"""The run summary and the idle heartbeat of the streaming trainer (pure: no Spark, no Kafka)."""

from __future__ import annotations

import json

from streaming.decisions import BatchResult
from streaming.report_lines import heartbeat, run_summary


def _res(batch_id: int, rows: int, *, dcg: float = float("nan"), pop: float = float("nan"), n: int = 0,
         reasons: dict[str, int] | None = None, replayed: bool = False) -> BatchResult:
    reasons = reasons or {}
    return BatchResult(batch_id=batch_id, stream_id="s", rows_in=rows, rows_valid=rows - sum(reasons.values()),
                       rows_quarantined=sum(reasons.values()), quarantine_reasons=json.dumps(reasons), dcg=dcg,
                       dcg_popularity=pop, dcg_events=n, replayed=replayed)


def test_the_summary_weights_dcg_by_evaluated_events_and_sums_quarantine_reasons():
    results = [_res(0, 100, reasons={"malformed_json": 2}),  # the first batch: no model yet
               _res(1, 100, dcg=0.2, pop=0.1, n=10, reasons={"missing_item": 1, "malformed_json": 1}),
               _res(2, 100, dcg=0.5, pop=0.1, n=30)]
    text = run_summary(results, seconds=10.0, model_version=7, k=100)
    assert "3 batches (0 replayed), 300 records in, 296 valid events, 30 records/s over 10.0s" in text, text
    assert "dcg@100 0.4250 vs popularity 0.1000 over 40 events of 2 batches" in text, text  # (2 + 15) / 40
    assert "quarantined 4: malformed_json 3, missing_item 1" in text, text
    assert "factors table version 7" in text, text


def test_a_replayed_batch_is_not_counted_twice_and_no_evaluation_is_said_so():
    results = [_res(0, 50), _res(0, 50, replayed=True)]
    text = run_summary(results, seconds=0.0, model_version=None, k=10)
    assert "2 batches (1 replayed), 50 records in" in text, text
    assert "no batch was evaluated" in text and "quarantined 0" in text and "no factors table yet" in text, text


def test_a_run_with_no_batch_says_the_topic_held_nothing_new():
    text = run_summary([], seconds=0.9, model_version=8, k=100)
    assert "0 batches (0 replayed), 0 records in" in text, text
    assert "no batch ran (the topic held nothing past the checkpoint's offsets)" in text, text
    assert "first batch meets no model" not in text, text


def test_the_heartbeat_names_the_topic_and_the_last_batch():
    assert heartbeat(61.2, None, "events") == "idle 61s: waiting for the first events on topic events"
    assert heartbeat(120, _res(4, 30), "t") == "idle 120s: no new events on topic t since batch 4 (30 records, lag -1 rec)"
