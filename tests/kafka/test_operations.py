"""Operating the trainer: /metrics of a running stream, MLflow runs of the stream and of every retrain,
and the `dsgd report` page rendered by a real headless Chromium.

One module fixture runs the real thing once (a broker, a stream with bad records, a retrain, an MLflow
sqlite store) and every test reads what it left; nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch.retrain import EXIT_OK
from batch.retrain import main as retrain_main
from dsgd.core import metric_names as N
from dsgd.ops.kafka_broker import free_port
from dsgd.store.delta_log import latest_version
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables
from streaming.trainer import StreamTrainer
from tests.browser import loaded_images, screenshot
from tests.kafka.stream_helpers import BAD_RECORDS, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

N_EVENTS = 1200


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of /metrics, parsed by the Prometheus client's own parser."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _wait_for_scrape(trainer: StreamTrainer, port: int, n_records: int, timeout_s: float = 400) -> dict:
    """Scrape until every record went through a batch that the exporter and the listener both saw."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = _scrape(port)
        done = sum(r.rows_in for r in trainer.results) == n_records
        if done and got.get((N.STREAM_BATCHES + "_total", ())) == len(trainer.results) and \
                got.get((N.QUERY_BATCH_ID, ())) == trainer.results[-1].batch_id:
            return got
        time.sleep(0.5)
    raise AssertionError(f"the stream did not take in {n_records} records in {timeout_s}s: {len(trainer.results)} "
                         "batches")


@pytest.fixture(scope="module")
def ops(spark, kafka_broker, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    topic = "ops-stream"
    kafka_broker.create_topic(topic, partitions=2)
    port = free_port()
    cfg = base_config.replace(
        app={"warehouse": str(root / "warehouse"), "checkpoint_root": str(root / "checkpoints")},
        kafka={"bootstrap_servers": kafka_broker.bootstrap, "topic": topic, "max_offsets_per_trigger": 400},
        stream={"trigger_interval": "1 second", "eval_max_events": 500, "metrics_port": port,
                "metrics_address": "127.0.0.1", "mlflow_interval_s": 0.0},
        retrain={"mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "als_max_iter": 3},
        model={"engine": "local", "blocks": 2, "negatives": 4, "lr": 0.1})
    produce(kafka_broker.bootstrap, topic, known_stream(N_EVENTS), BAD_RECORDS)
    trainer = StreamTrainer(spark, cfg)
    query = trainer.start()  # processing-time trigger: the query keeps running while it is scraped
    try:
        scraped = _wait_for_scrape(trainer, port, N_EVENTS + len(BAD_RECORDS))
        tables = Tables.from_config(cfg)
        rows = spark.read.format("delta").load(tables.metrics).toPandas().sort_values("batch_id")
        factors_version = FactorStore(spark, tables.factors).version()
    finally:
        query.stop()
        trainer.monitor.close()
    events_version = latest_version(spark, tables.events)
    as_of = int(time.time() * 1000)
    assert retrain_main(spark, cfg, as_of=as_of) == EXIT_OK
    after_retrain = FactorStore(spark, tables.factors).version()
    assert retrain_main(spark, cfg, as_of=as_of) == EXIT_OK  # the same as-of again: already done, still a run
    return SimpleNamespace(cfg=cfg, root=root, scraped=scraped, rows=rows.reset_index(drop=True), trainer=trainer,
                           factors_version=factors_version, events_version=events_version, as_of=as_of,
                           after_retrain=after_retrain, snapshots_version=latest_version(spark, tables.snapshots))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_metrics_endpoint_of_a_running_stream_equals_the_metrics_table(ops):
    got, rows = ops.scraped, ops.rows
    assert len(rows) >= 4 and list(rows["batch_id"]) == list(range(len(rows)))
    assert got[(N.STREAM_BATCHES + "_total", ())] == len(rows)
    for name, column in ((N.STREAM_ROWS_IN, "rows_in"), (N.STREAM_ROWS_VALID, "rows_valid"),
                         (N.STREAM_RECORDS_LOST, "records_lost"), (N.STREAM_REJECTED, "rejected"),
                         (N.STREAM_REPLAYED, "replayed")):
        assert got[(name + "_total", ())] == rows[column].sum(), name
    reasons: dict[str, int] = {}
    for text in rows["quarantine_reasons"]:
        for reason, n in json.loads(text).items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert reasons == {r: sum(1 for _, x in BAD_RECORDS if x == r) for _, r in BAD_RECORDS}
    assert {lab[0][1]: v for (name, lab), v in got.items() if name == N.STREAM_ROWS_QUARANTINED + "_total"} == reasons
    assert got[(N.STREAM_ALERTS + "_total", ())] == (rows["alert"] != "").sum()
    assert got[(N.STREAM_BATCH_DURATION + "_count", ())] == len(rows)
    assert got[(N.STREAM_BATCH_DURATION + "_sum", ())] == pytest.approx(rows["seconds_total"].sum(), rel=1e-12)

    last = rows.iloc[-1]  # the gauges hold the last batch's row, exactly
    for name, column in ((N.STREAM_DCG, "dcg"), (N.STREAM_DCG_POPULARITY, "dcg_popularity"),
                         (N.STREAM_DCG_EVENTS, "dcg_events"), (N.STREAM_LOSS, "loss"), (N.STREAM_LEARNING_RATE, "lr"),
                         (N.STREAM_ROWS_PER_SECOND, "rows_per_s"), (N.STREAM_LAG_RECORDS, "lag_records"),
                         (N.STREAM_LAST_BATCH_ID, "batch_id")):
        assert _same(got[(name, ())], float(last[column])), (name, got[(name, ())], last[column])
    for phase in ("parse", "eval", "train", "write", "total"):
        assert got[(N.STREAM_BATCH_SECONDS, (("phase", phase),))] == last[f"seconds_{phase}"]
    assert got[(N.STREAM_LAG_SECONDS, ())] == (last["lag_ms"] / 1000.0 if last["lag_ms"] >= 0 else -1.0)
    for side, touched, new in (("user", "users_touched", "new_users"), ("item", "items_touched", "new_items")):
        assert got[(N.STREAM_FACTOR_ROWS, (("side", side),))] == last[touched]
        assert got[(N.STREAM_NEW_IDS, (("side", side),))] == last[new]
    assert got[(N.MODEL_VERSION, ())] == ops.factors_version
    assert got[(N.MODEL_AGE_SECONDS, ())] >= 0
    assert not any(name.endswith("_created") for name, _ in got)


def test_metrics_endpoint_reports_the_query_progress_from_the_listener(ops):
    got, rows = ops.scraped, ops.rows
    assert got[(N.QUERY_ACTIVE, ())] == 1
    assert got[(N.QUERY_BATCH_ID, ())] == rows["batch_id"].max()
    assert got[(N.QUERY_INPUT_ROWS + "_total", ())] == rows["rows_in"].sum()  # Spark counted what the batches read
    ops_seen = {dict(lab)["operation"] for name, lab in got if name == N.QUERY_DURATION_SECONDS}
    assert {"addBatch", "triggerExecution"} <= ops_seen
    assert got[(N.QUERY_DURATION_SECONDS, (("operation", "addBatch"),))] > 0
    assert got[(N.QUERY_OFFSETS_BEHIND, ())] == 0  # the topic was read to its end
    assert got[(N.BUILD_INFO, (("process", "stream"), ("version", "0.2.0")))] == 1


def _client(ops):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(ops.cfg.retrain.mlflow_tracking_uri)
    return c, c.get_experiment_by_name(ops.cfg.retrain.mlflow_experiment).experiment_id


def test_the_stream_logs_one_mlflow_run_per_query_with_its_batch_metrics(ops):
    c, exp = _client(ops)
    runs = c.search_runs([exp], filter_string=f"tags.`dsgd.stream_id` = '{ops.trainer.stream_id}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["dsgd.job"] == "stream"
    assert run.data.params["model.rank"] == str(ops.cfg.model.rank) and run.data.params["kafka.topic"] == "ops-stream"
    for column in ("rows_in", "rows_valid", "rows_quarantined", "dcg", "seconds_total", "lag_records"):
        hist = sorted(c.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
        assert [m.step for m in hist] == list(ops.rows["batch_id"]), column  # interval 0: every batch
        assert all(_same(m.value, float(v)) for m, v in zip(hist, ops.rows[column], strict=True)), column


def test_every_retrain_is_an_mlflow_run_with_the_delta_versions_it_read_and_wrote(ops):
    c, exp = _client(ops)
    runs = sorted(c.search_runs([exp], filter_string="tags.`dsgd.job` = 'retrain'"), key=lambda r: r.info.start_time)
    assert [r.data.tags["status"] for r in runs] == ["blended", "already_done"]
    first = runs[0]
    p, t, m = first.data.params, first.data.tags, first.data.metrics
    assert first.info.status == "FINISHED" and t["snapshot_id"] == f"asof-{ops.as_of}" and p["as_of"] == str(ops.as_of)
    assert p["events_version"] == str(ops.events_version)  # read: the events table as the stream left it
    assert p["factors_version_read"] == str(ops.factors_version)
    assert t["factors_version_written"] == str(ops.after_retrain) and ops.after_retrain > ops.factors_version
    assert t["snapshot_version"] == str(ops.snapshots_version)
    assert p["retrain.policy"] == "replace" and p["als.maxIter"] == "3" and p["als.rank"] == str(ops.cfg.model.rank)
    assert m["n_events"] == ops.rows["rows_valid"].sum() and m["seconds.total"] > 0
    assert {"n_pairs", "n_users", "n_items", "seconds_fit", "swap_attempts", "rows_written"} <= set(m)
    assert "retrain.mlflow_tracking_uri" not in p


def test_report_page_renders_in_headless_chromium_with_every_plot(ops, tmp_path, capsys):
    from dsgd import cli

    out = tmp_path / "report.html"
    rc = cli.main(["report", "--profile", "local", "--set", f'app.warehouse="{ops.cfg.app.warehouse}"',
                   "--out", str(out)])
    assert rc == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["plots"] == 6 and out.is_file()
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert f"{len(ops.rows)} (" in page  # the summary counts the batches
    images = loaded_images(out, tmp_path)
    assert len(images) == 6
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert {img["alt"] for img in images} == {"DCG and popularity DCG over time", "Events per second",
                                              "Batch time per phase", "Consumer lag", "Quarantine reasons",
                                              "Model versions and retrains"}
    shot = screenshot(out, tmp_path / "report.png", tmp_path)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DSGD_REPORT_SCREENSHOT"):  # how docs/img/report.png is made
        shutil.copy(shot, os.environ["DSGD_REPORT_SCREENSHOT"])
