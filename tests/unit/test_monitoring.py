"""The monitoring pieces without a JVM: Prometheus values from batch results, the MLflow rate bound
against a real sqlite tracking store, the report page on an empty and a small warehouse."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dsgd.core import metric_names as N
from dsgd.core.config import Config
from dsgd.ops.report import ReportData, writer_of
from dsgd.ops.report_page import PLOTS, render
from dsgd.ops.tracking import RateLimit
from streaming.decisions import BatchResult
from streaming.monitoring import MlflowStreamRun, StreamMetrics


def _result(batch_id: int, **kw) -> BatchResult:
    base = dict(rows_in=100, rows_valid=97, rows_quarantined=3, quarantine_reasons=json.dumps({"bad_ts": 1,
                "malformed_json": 2}), dcg=0.25, dcg_popularity=0.125, dcg_events=97, loss=0.5, lr=0.1,
                rows_per_s=1000.0, lag_records=42, lag_ms=1500, seconds_parse=0.5, seconds_eval=0.25,
                seconds_train=0.125, seconds_write=0.0625, seconds_total=1.0, users_touched=9, items_touched=8,
                new_users=2, new_items=1)
    return BatchResult(batch_id=batch_id, stream_id="s", **{**base, **kw})


def _samples(metrics: StreamMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_counters_sum_the_rows_and_gauges_hold_the_last_row():
    m = StreamMetrics()
    m.observe(_result(0, dcg=float("nan"), dcg_popularity=float("nan"), dcg_events=0))
    m.observe(_result(1, rows_in=50, rows_valid=50, rows_quarantined=0, quarantine_reasons="{}", lag_ms=-1,
                      records_lost=7, alert="data loss: 7 records", rejected=True))
    m.set_model(12, now=1000.0)
    m.set_model(12, now=2000.0)  # the same version keeps its first time
    got = _samples(m)
    assert got[(N.STREAM_BATCHES + "_total", ())] == 2
    assert got[(N.STREAM_ROWS_IN + "_total", ())] == 150 and got[(N.STREAM_ROWS_VALID + "_total", ())] == 147
    assert got[(N.STREAM_ROWS_QUARANTINED + "_total", (("reason", "malformed_json"),))] == 2
    assert got[(N.STREAM_ROWS_QUARANTINED + "_total", (("reason", "bad_ts"),))] == 1
    assert got[(N.STREAM_RECORDS_LOST + "_total", ())] == 7 and got[(N.STREAM_ALERTS + "_total", ())] == 1
    assert got[(N.STREAM_REJECTED + "_total", ())] == 1 and got[(N.STREAM_REPLAYED + "_total", ())] == 0
    assert got[(N.STREAM_DCG, ())] == 0.25 and got[(N.STREAM_LAST_BATCH_ID, ())] == 1
    assert got[(N.STREAM_LAG_SECONDS, ())] == -1.0 and got[(N.STREAM_LAG_RECORDS, ())] == 42
    assert got[(N.STREAM_BATCH_SECONDS, (("phase", "write"),))] == 0.0625
    assert got[(N.STREAM_BATCH_DURATION + "_count", ())] == 2 and got[(N.STREAM_BATCH_DURATION + "_sum", ())] == 2.0
    assert got[(N.MODEL_VERSION, ())] == 12 and got[(N.MODEL_COMMIT_TIMESTAMP, ())] == 1000.0
    assert not any(name.endswith("_created") for name, _ in got)


def test_first_batch_without_a_model_exports_nan_dcg():
    m = StreamMetrics()
    m.observe(_result(0, dcg=float("nan"), dcg_events=0))
    assert math.isnan(_samples(m)[(N.STREAM_DCG, ())])
    assert math.isnan(_samples(m)[(N.MODEL_AGE_SECONDS, ())])  # no model version seen yet


def test_rate_limit_lets_one_event_through_per_interval():
    now = [0.0]
    limit = RateLimit(60.0, clock=lambda: now[0])
    seen = []
    for t in (0, 10, 59.9, 60, 61, 200):
        now[0] = t
        seen.append(limit.ready())
    assert seen == [True, False, False, True, False, True]


def test_the_stream_run_logs_at_the_bounded_rate_and_the_last_batch_at_the_end(tmp_path):
    cfg = Config().replace(retrain={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                           stream={"mlflow_interval_s": 60.0})
    run = MlflowStreamRun(cfg)
    now = [0.0]
    run.limit = RateLimit(cfg.stream.mlflow_interval_s, clock=lambda: now[0])
    for batch_id, t in enumerate((0, 5, 30, 65, 70, 90)):  # logged: 0 (first), 3 (t=65), 5 (the last, at close)
        now[0] = t
        run.observe(_result(batch_id, rows_in=100 + batch_id))
    run_id = run.run.run_id
    run.close(failed=False)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(cfg.retrain.mlflow_tracking_uri)
    hist = sorted(c.get_metric_history(run_id, "rows_in"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in hist] == [(0, 100.0), (3, 103.0), (5, 105.0)]
    info = c.get_run(run_id)
    assert info.info.status == "FINISHED" and info.data.tags["dsgd.stream_id"] == "s"


def test_factors_commits_are_attributed_to_their_writer():
    assert writer_of("dsgd-s1-factors:12:13:abc") == "stream"
    assert writer_of("dsgd-swap:14:ab") == "retrain"
    assert writer_of("dsgd-compact:15:cd") == "compaction"
    assert writer_of("dsgd-restore:3:16:ef") == "rollback"
    assert writer_of(None) == "other" and writer_of("dsgd:0:x") == "other"


def _empty() -> ReportData:
    from dsgd.ops.report import METRIC_COLUMNS

    return ReportData(metrics=pd.DataFrame(columns=list(METRIC_COLUMNS)),
                      versions=pd.DataFrame(columns=["version", "timestamp", "writer"]),
                      retrains=pd.DataFrame(columns=["created_at", "snapshot_id", "as_of", "trainer", "policy",
                                                     "train_rmse", "n_events"]), warehouse="/nowhere")


@pytest.mark.parametrize("with_data", [False, True])
def test_the_page_has_every_plot_with_or_without_data(with_data):
    d = _empty()
    if with_data:
        rows = [_result(i).row() for i in range(3)]
        d.metrics = pd.DataFrame(rows).assign(written_at=pd.date_range("2026-01-01", periods=3, freq="5s"))
        d.versions = pd.DataFrame({"version": [1, 2, 3], "timestamp": d.metrics["written_at"],
                                   "writer": ["stream", "retrain", "stream"]})
    page, n = render(d, title="t")
    assert n == len(PLOTS) == page.count("<img ") == page.count("data:image/png;base64,")
    assert ("no batch yet" in page) is not with_data
    if with_data:
        assert "malformed_json" not in page  # reasons are drawn into the plot, not listed as text
        assert "291 / 9" in page  # 3 batches x 97 valid / 3 quarantined


def test_the_core_needs_no_mlflow_and_a_set_uri_without_it_fails_naming_the_extra():
    """MLflow hidden from the interpreter (as in a core install): everything imports and runs with
    tracking off; a set tracking URI fails at start-up with the install command."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
sys.modules["mlflow"] = None  # any `import mlflow...` now raises ImportError
from batch.tracking import retrain_run
from dsgd.core.config import Config, ConfigError
from streaming.monitoring import MlflowStreamRun, StreamMetrics
import dsgd.api.ml, dsgd.ops.report, streaming.trainer
StreamMetrics()
with retrain_run(Config()) as run:
    run.record(None, None, None)
try:
    with retrain_run(Config().replace(retrain={"mlflow_tracking_uri": "sqlite:///x.db"})):
        pass
except ConfigError as exc:
    print(exc)
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "retrain.mlflow_tracking_uri" in out.stdout and "pip install 'dsgd-stream[mlflow]'" in out.stdout
