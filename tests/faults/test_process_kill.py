"""Item 3: SIGKILL and SIGTERM of a ``python -m dsgd stream`` process (the SIGKILL from a fault hook,
:mod:`tests.faults.faulty_stream`) mid-stream, then restarts of the
same command, give the factors of a fault-free run with every batch recorded once."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tests.faults.helpers import REFERENCE_BATCH, CliRun, metrics, stream_cfg, table, write_conf
from tests.kafka.stream_helpers import assert_same_factors, factors, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def test_sigkill_and_sigterm_of_the_trainer_process_then_restart_equal_the_fault_free_run(
        spark, kafka_broker, topic, cfg, tmp_path, fault_free_run):
    df, clean, n_batches = fault_free_run.events, fault_free_run.cfg, fault_free_run.batches
    produce(kafka_broker.bootstrap, topic, df)
    opts = {"kafka": {"max_offsets_per_trigger": REFERENCE_BATCH}}
    assert n_batches == 8

    crash = stream_cfg(cfg, topic, tmp_path / "crash", **opts)
    conf = write_conf(tmp_path / "crash.toml", crash)
    cmd = ["stream", "--available-now", "--profile", "local", "--conf", str(conf),
           "--set", 'spark.driver_memory="1g"', "--set", "spark.shuffle_partitions=2"]

    # 1. SIGKILL right after batch 2's factors are committed (before its metrics and Spark's commit log)
    run = CliRun(["after_factors:2", "kill", *cmd[1:]], module="tests.faults.faulty_stream")
    assert run.wait(400) == -signal.SIGKILL, run.text[-3000:]
    m = metrics(spark, crash)
    assert sorted(m["batch_id"]) == [0, 1]

    # 2. restart; SIGTERM while a later batch runs (sent as soon as batch 4 is logged)
    def on_line(r: CliRun, line: str) -> None:
        if "batch 4: rows=" in line and not getattr(r, "termed", False):
            r.termed = True
            os.kill(r.proc.pid, signal.SIGTERM)

    run = CliRun(cmd, on_line=on_line)
    rc = run.wait(400)
    assert getattr(run, "termed", False), run.text[-3000:]
    assert rc == 0, run.text[-3000:]  # a clean stop, not a crash
    assert "REPLAY" in run.text  # batch 2's factors were in; only its metrics were replayed
    done = sorted(metrics(spark, crash)["batch_id"])
    assert done[:5] == [0, 1, 2, 3, 4] and len(done) < n_batches, done

    # 3. restart to the end
    run = CliRun(cmd)
    assert run.wait(400) == 0, run.text[-3000:]

    assert_same_factors(factors(spark, clean.app.warehouse), factors(spark, crash.app.warehouse))
    m = metrics(spark, crash)
    assert m["batch_id"].is_unique and sorted(m["batch_id"]) == list(range(n_batches))
    mc = metrics(spark, clean)
    assert m["rows_in"].sum() == mc["rows_in"].sum() == len(df)
    np.testing.assert_allclose(m["dcg"].to_numpy(float), mc["dcg"].to_numpy(float), rtol=1e-9, equal_nan=True)
    ev = table(spark, crash, "events")
    assert len(ev) == len(df) and not ev.duplicated(["seq"]).any()
