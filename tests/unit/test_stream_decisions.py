"""The streaming trainer's decisions, without Spark or Kafka: replay detection, records lost, divergence,
the metadata a batch commits, the metrics row and its log line."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from streaming import decisions as D


def test_metrics_schema_lists_every_batch_result_field_with_its_sql_type():
    cols = dict(c.split() for c in D.METRICS_SCHEMA.split(", "))
    assert list(cols) == list(D.BatchResult(batch_id=0, stream_id="s").row())
    assert cols["batch_id"] == "long" and cols["dcg"] == "double" and cols["offsets"] == "string"
    assert cols["rejected"] == "boolean"


def test_offsets_of_records_per_partition():
    rows = pa.table({"topic": ["t", "t", "t", "u"], "partition": [0, 0, 1, 0], "offset": [5, 9, 3, 7]})
    assert D.offsets_of(rows) == {"t:0": [5, 9], "t:1": [3, 3], "u:0": [7, 7]}
    assert D.offsets_of(rows.slice(0, 0)) == {}


@pytest.mark.parametrize("prev, offsets, lost", [
    ({"t:0": 9}, {"t:0": [10, 20]}, 0),  # contiguous
    ({"t:0": 9}, {"t:0": [15, 20]}, 5),  # 10..14 deleted before they were read
    ({"t:0": 9, "t:1": 3}, {"t:0": [12, 20], "t:1": [4, 4]}, 2),
    ({}, {"t:0": [100, 120]}, 0),  # a partition seen for the first time loses nothing
])
def test_records_lost_between_batches(prev, offsets, lost):
    assert D.records_lost(prev, offsets) == lost


def test_a_batch_is_already_applied_only_for_its_own_stream_and_an_id_not_newer():
    meta = {"stream_id": "s1", "last_batch": 7}
    assert D.already_applied(meta, "s1", 7) and D.already_applied(meta, "s1", 3)
    assert not D.already_applied(meta, "s1", 8)
    assert not D.already_applied(meta, "s2", 7)  # a new checkpoint = a new stream: its batch 7 is new
    assert not D.already_applied({"last_batch": -1}, "s1", 0)


def test_a_replayed_batch_takes_over_the_stored_figures_but_not_its_identity():
    res = D.BatchResult(batch_id=4, stream_id="s1", rows_in=10, seconds_total=9.0)
    stored = {"last_batch": 4, "last_result": {"dcg": 0.25, "loss": 0.5, "batch_id": 99, "seconds_total": 1.0,
                                                "stream_id": "other", "replayed": False}}
    D.replay_result(res, stored, 4)
    assert (res.dcg, res.loss, res.replayed) == (0.25, 0.5, True)
    assert (res.batch_id, res.stream_id, res.seconds_total) == (4, "s1", 9.0)
    older = D.BatchResult(batch_id=3, stream_id="s1")
    D.replay_result(older, stored, 3)  # the stored figures belong to batch 4: nothing is taken over
    assert math.isnan(older.dcg) and older.replayed


@pytest.mark.parametrize("vec, bias, reason", [
    (np.ones((2, 3), np.float32), np.zeros(2, np.float32), ""),
    (np.array([[1.0, np.nan]], np.float32), np.zeros(1, np.float32), "non-finite factors"),
    (np.ones((1, 2), np.float32), np.array([np.inf], np.float32), "non-finite factors"),
    (np.array([[5000.0, 1.0]], np.float32), np.zeros(1, np.float32), "factor magnitude 5e+03 > stream.max_abs_factor 1000"),
    (np.ones((1, 2), np.float32), np.array([-2000.0], np.float32), "factor magnitude 2e+03"),
    (np.zeros((0, 3), np.float32), np.zeros(0, np.float32), ""),
])
def test_divergence_names_why_a_batch_is_rejected(vec, bias, reason):
    got = D.divergence(vec, bias, 1000.0)
    assert got.startswith(reason) and bool(got) == bool(reason)


def test_trained_meta_moves_steps_offsets_counts_and_mean():
    meta = {"stream_id": "s1", "steps": 4, "offsets_end": {"t:0": 9, "t:1": 5}, "n_ratings": 10, "mu": 3.0}
    res = D.BatchResult(batch_id=2, stream_id="s1", dcg=0.1)
    out = D.trained_meta(meta, stream_id="s1", ends={"t:0": 19}, epochs_run=2, schedule_state={"kind": "constant"},
                         n_events=5, mu=3.2, res=res)
    assert out["steps"] == 6 and out["offsets_end"] == {"t:0": 19, "t:1": 5}
    assert out["n_ratings"] == 15 and out["mu"] == 3.2 and out["last_result"]["dcg"] == 0.1
    other = D.trained_meta(meta, stream_id="s2", ends={"t:0": 19}, epochs_run=1, schedule_state={},
                           n_events=1, mu=3.0, res=res)
    assert other["offsets_end"] == {"t:0": 19}  # offsets of another stream are not carried over


def test_rejected_meta_keeps_the_schedule_and_counts_an_alert():
    meta = {"stream_id": "s1", "steps": 4, "schedule": {"kind": "bold_driver", "lr": 0.1}, "alerts": 1}
    out = D.rejected_meta(meta, stream_id="s1", ends={"t:0": 3}, res=D.BatchResult(batch_id=1, stream_id="s1"))
    assert out["steps"] == 4 and out["schedule"] == meta["schedule"] and out["alerts"] == 2
    assert out["offsets_end"] == {"t:0": 3}


def test_running_mean_and_mean_loss():
    assert D.running_mean(3.0, 2, np.array([6.0])) == pytest.approx(4.0)
    assert D.mean_loss([0.5, 0.25]) == pytest.approx(0.375)
    assert D.mean_loss([float("nan"), 0.5]) == pytest.approx(0.5)
    assert math.isnan(D.mean_loss([float("nan")]))


def test_quarantine_summary_counts_reasons_sorted():
    assert json.loads(D.quarantine_summary(pa.array(["bad_ts", None, "malformed_json", "bad_ts"]))) == {
        "bad_ts": 2, "malformed_json": 1}
    assert D.quarantine_summary(pa.array([None, None], pa.string())) == "{}"
    assert D.quarantine_summary(pa.array([], pa.string())) == "{}"


def test_the_log_line_says_when_a_batch_had_no_model_to_evaluate_against():
    first = D.BatchResult(batch_id=0, stream_id="s", rows_in=10, rows_valid=10)
    assert "no model yet" in D.log_line(first, 100)
    later = D.BatchResult(batch_id=1, stream_id="s", dcg=0.4, dcg_popularity=0.3, dcg_events=10, loss=0.2,
                          alert="data loss: 3 records")
    line = D.log_line(later, 100)
    assert "dcg@100=0.4000 (pop 0.3000, 10 events)" in line and "loss=0.2000" in line
    assert line.endswith("ALERT data loss: 3 records")


@pytest.mark.parametrize(("seconds", "shown"), [
    (4.24, "4.2s"), (89.9, "89.9s"), (90, "1.5 min"), (750, "12.5 min"), (3 * 3600, "3.0 h"),
    (40 * 86400, "40.0 days"), (902927589.5, "28.6 years"), (-2.0, "-2.0s"), (float("nan"), "n/a"),
])
def test_the_event_age_is_shown_in_a_unit_a_reader_takes_in(seconds, shown):
    assert D.human_age(seconds) == shown


def test_the_log_line_shows_a_replays_event_age_in_years():
    old = D.BatchResult(batch_id=1, stream_id="s", lag_ms=902927589.5 * 1000)
    assert "event age 28.6 years " in D.log_line(old, 100)
    assert "event age n/a (no valid event) " in D.log_line(D.BatchResult(batch_id=2, stream_id="s"), 100)


def test_popularity_ranks_from_the_count_histogram_equal_a_sort():
    from streaming.evaluate import popularity_ranks

    rng = np.random.default_rng(3)
    count = rng.integers(0, 20, 500)
    targets = rng.integers(0, 500, 200)
    want = 1 + (count[None, :] > count[targets][:, None]).sum(axis=1)
    assert np.array_equal(popularity_ranks(count, targets), want)


def test_the_evaluation_sample_shrinks_with_the_catalogue_but_never_to_zero():
    from streaming.evaluate import sample_size

    assert sample_size(20000, 100_000_000, 1000) == 20000
    assert sample_size(20000, 100_000_000, 10**6) == 100
    assert sample_size(20000, 100_000_000, 10**10) == 1
    assert sample_size(0, 100_000_000, 10) == 0
