"""Item 3: SIGKILL and SIGTERM of a ``python -m dsgd stream`` process mid-stream, then restarts of the
same command, give the factors of a fault-free run with every batch recorded once.

Two tests: one at fixed points (SIGKILL right after a factor commit, SIGTERM while a batch runs), and a
chaos test that SIGKILLs the whole trainer (its Python driver, JVM and Python workers) at seeded random
moments several times during one stream. CI kills 3 times in the 8-batch reference stream;
``DSGD_CHAOS_KILLS=12 DSGD_CHAOS_EVENTS=8000`` (and ``DSGD_CHAOS_SEED``) runs a longer chaos.
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest

from streaming.trainer import StreamTrainer
from tests.faults.helpers import (
    REFERENCE_BATCH,
    REFERENCE_EVENTS,
    REFERENCE_SEED,
    CliRun,
    cli_env,
    metrics,
    stream_cfg,
    wait_for,
    write_conf,
)
from tests.kafka.stream_helpers import assert_same_run, known_stream, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]

CHAOS_KILLS = int(os.environ.get("DSGD_CHAOS_KILLS", "3"))
CHAOS_EVENTS = int(os.environ.get("DSGD_CHAOS_EVENTS", str(REFERENCE_EVENTS)))
CHAOS_SEED = int(os.environ.get("DSGD_CHAOS_SEED", "15"))


def _command(conf) -> list[str]:
    return ["stream", "--available-now", "--profile", "local", "--conf", str(conf),
            "--set", 'spark.driver_memory="1g"', "--set", "spark.shuffle_partitions=2"]


def test_sigkill_and_sigterm_of_the_trainer_process_then_restart_equal_the_fault_free_run(
        spark, kafka_broker, topic, cfg, tmp_path, fault_free_run):
    df, clean, n_batches = fault_free_run.events, fault_free_run.cfg, fault_free_run.batches
    produce(kafka_broker.bootstrap, topic, df)
    opts = {"kafka": {"max_offsets_per_trigger": REFERENCE_BATCH}}
    assert n_batches == 8

    crash = stream_cfg(cfg, topic, tmp_path / "crash", **opts)
    cmd = _command(write_conf(tmp_path / "crash.toml", crash))

    # 1. SIGKILL right after batch 2's factors are committed (before its metrics and Spark's commit log)
    run = CliRun(cmd, env=cli_env(DSGD_FAULT="after_factors:2", DSGD_FAULT_MODE="kill"))
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
    assert "batch 2: factors already applied" in run.text  # batch 2's factors were in; its metrics replayed
    done = sorted(metrics(spark, crash)["batch_id"])
    assert done[:5] == [0, 1, 2, 3, 4] and len(done) < n_batches, done

    # 3. restart to the end: bit for bit the fault-free run, every batch and event once
    run = CliRun(cmd)
    assert run.wait(400) == 0, run.text[-3000:]
    got = assert_same_run(spark, clean.app.warehouse, crash.app.warehouse)
    assert list(got["metrics"]["batch_id"]) == list(range(n_batches)) and len(got["events"]) == len(df)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


_BATCH_LINE = re.compile(r"batch (\d+): rows=.* total ([0-9.]+)s")


def test_sigkill_at_random_moments_then_restarts_equal_the_fault_free_run(spark, kafka_broker, topic, cfg,
                                                                         tmp_path, request):
    """The whole trainer process group is SIGKILLed at a seeded random moment of each of several runs
    (inside the first batch after a restart or a later one, in any phase, or between two batches),
    restarted on the same checkpoint each time, and run to the end: the result equals an uninterrupted
    run bit for bit, every batch and every event recorded once."""
    if CHAOS_EVENTS == REFERENCE_EVENTS:  # the fault suite's shared reference run
        ref = request.getfixturevalue("fault_free_run")
        df, clean = ref.events, ref.cfg
        produce(kafka_broker.bootstrap, topic, df)
    else:
        df = known_stream(CHAOS_EVENTS, seed=REFERENCE_SEED)
        produce(kafka_broker.bootstrap, topic, df)
        clean = stream_cfg(cfg, topic, tmp_path / "clean", kafka={"max_offsets_per_trigger": REFERENCE_BATCH})
        assert StreamTrainer(spark, clean).run(timeout_s=1200) == 0
    n_batches = -(-len(df) // REFERENCE_BATCH)
    # each run is killed after at most 2 completed batches: the stream outlasts every kill
    assert (n_batches - 1) // 2 >= CHAOS_KILLS, "too many kills for this stream; raise DSGD_CHAOS_EVENTS"

    chaos = stream_cfg(cfg, topic, tmp_path / "chaos", kafka={"max_offsets_per_trigger": REFERENCE_BATCH})
    cmd = _command(write_conf(tmp_path / "chaos.toml", chaos))
    rng = np.random.default_rng(CHAOS_SEED)
    landed: list[str] = []
    batch_s = 2.0  # until a batch of a run has been timed
    for k in range(CHAOS_KILLS):
        after_batches, frac = int(rng.integers(0, 2)), float(rng.uniform(0.0, 1.0))
        run = CliRun(cmd)
        wait_for(lambda r=run: " started: topic=" in r.text or r.proc.poll() is not None, 300, "the stream to start")

        def batches(r: CliRun = run) -> list[tuple[int, float]]:
            return [(int(b), float(s)) for b, s in _BATCH_LINE.findall(r.text)]

        wait_for(lambda r=run, n=after_batches: len(batches(r)) >= n or r.proc.poll() is not None, 300,
                 f"{after_batches} batches of run {k}")
        if batches(run):
            batch_s = batches(run)[-1][1]
        time.sleep(frac * batch_s)
        assert run.proc.poll() is None, f"run {k} ended before its kill:\n{run.text[-3000:]}"
        last = [ln.strip() for ln in run.lines if "dsgd" in ln][-1:]
        os.killpg(run.proc.pid, signal.SIGKILL)
        assert run.wait(60) == -signal.SIGKILL
        wait_for(lambda p=run.proc.pid: _group_gone(p), 60, "the killed JVM and workers to exit")
        landed.append(f"kill {k}: {after_batches} batch(es) + {frac:.2f} x {batch_s:.2f}s into the run, "
                      f"after {[b for b, _ in batches(run)]}; last line: {last[0][:160] if last else '-'}")
    print("\n".join(landed))

    run = CliRun(cmd)
    assert run.wait(600) == 0, run.text[-3000:]
    got = assert_same_run(spark, clean.app.warehouse, chaos.app.warehouse)
    assert list(got["metrics"]["batch_id"]) == list(range(n_batches)) and len(got["events"]) == len(df)
