"""Item 3: SIGKILLs and a SIGTERM of a ``python -m dsgd stream`` process mid-stream, each followed by a
restart of the same command on the same checkpoint, end with the fault-free run bit for bit, every
batch recorded once.

One stream, one test (each restart costs a JVM start): first SIGKILLs of the whole trainer (its Python
driver, JVM and Python workers) at seeded random moments, then a SIGKILL at a fixed point (right after a
batch's factor commit, before its metrics row and Spark's commit log), then a SIGTERM (a clean stop),
then a run to the end. CI kills at 1 random moment in the 8-batch reference stream;
``DSGD_CHAOS_KILLS=12 DSGD_CHAOS_EVENTS=8000`` (and ``DSGD_CHAOS_SEED``) runs a longer chaos.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import numpy as np
import pytest

from dsgd.store.factor_store import FactorStore
from streaming.trainer import StreamTrainer
from tests.faults.helpers import (
    REFERENCE_BATCH,
    REFERENCE_EVENTS,
    REFERENCE_SEED,
    CliRun,
    metrics,
    stream_cfg,
    wait_for,
    write_conf,
)
from tests.kafka.stream_helpers import assert_same_run, known_stream, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]

CHAOS_KILLS = int(os.environ.get("DSGD_CHAOS_KILLS", "1"))
CHAOS_EVENTS = int(os.environ.get("DSGD_CHAOS_EVENTS", str(REFERENCE_EVENTS)))
CHAOS_SEED = int(os.environ.get("DSGD_CHAOS_SEED", "15"))

_BATCH_LINE = re.compile(r"batch (\d+): rows=.* total ([0-9.]+)s")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _batches(run: CliRun) -> list[tuple[int, float]]:
    """(batch id, seconds) of every batch the run logged."""
    return [(int(b), float(s)) for b, s in _BATCH_LINE.findall(run.text)]


def test_sigkill_at_random_and_fixed_moments_and_sigterm_then_restarts_equal_the_fault_free_run(
        spark, kafka_broker, topic, cfg, tmp_path, request):
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
    # each random kill comes at most 2 batches into its run; 3 more batches for the fixed kill and SIGTERM
    assert n_batches - 3 >= 2 * CHAOS_KILLS, "too many kills for this stream; raise DSGD_CHAOS_EVENTS"

    crash = stream_cfg(cfg, topic, tmp_path / "crash", kafka={"max_offsets_per_trigger": REFERENCE_BATCH})
    cmd = ["stream", "--available-now", "--profile", "local", "--conf", str(write_conf(tmp_path / "crash.toml", crash)),
           "--set", 'spark.driver_memory="1g"', "--set", "spark.shuffle_partitions=2"]

    # 1. SIGKILL of the whole process group at seeded random moments: after 0 or 1 completed batches of
    #    the run, plus a random fraction of a batch's time (any phase of a batch, or between two)
    rng = np.random.default_rng(CHAOS_SEED)
    landed: list[str] = []
    batch_s = 2.0  # until a batch has been timed
    for k in range(CHAOS_KILLS):
        after_batches, frac = int(rng.integers(0, 2)), float(rng.uniform(0.0, 1.0))
        run = CliRun(cmd)
        wait_for(lambda r=run: " started: topic=" in r.text or r.proc.poll() is not None, 300, "the stream to start")
        wait_for(lambda r=run, n=after_batches: len(_batches(r)) >= n or r.proc.poll() is not None, 300,
                 f"{after_batches} batches of run {k}")
        if _batches(run):
            batch_s = _batches(run)[-1][1]
        time.sleep(frac * batch_s)
        assert run.proc.poll() is None, f"run {k} ended before its kill:\n{run.text[-3000:]}"
        os.killpg(run.proc.pid, signal.SIGKILL)
        assert run.wait(60) == -signal.SIGKILL
        wait_for(lambda p=run.proc.pid: _group_gone(p), 60, "the killed JVM and workers to exit")
        last = [ln.strip() for ln in run.lines if "dsgd" in ln][-1:]
        landed.append(f"kill {k}: {after_batches} batch(es) + {frac:.2f} x {batch_s:.2f}s into the run, after "
                      f"{[b for b, _ in _batches(run)]}; last line: {last[0][:160] if last else '-'}")
    print("\n".join(landed))

    # 2. SIGKILL right after the next batch's factors are committed (before its metrics and Spark's commit log)
    applied = int(json.loads(FactorStore(spark, f"{crash.app.warehouse}/factors").meta_raw())["last_batch"]) \
        if os.path.exists(f"{crash.app.warehouse}/factors") else -1
    b = applied + 1
    run = CliRun([f"after_factors:{b}", "kill", *cmd[1:]], module="tests.faults.faulty_stream")
    assert run.wait(400) == -signal.SIGKILL, run.text[-3000:]
    assert b not in set(metrics(spark, crash)["batch_id"])

    # 3. restart; SIGTERM as soon as it logs a batch (the replay of batch b): a clean stop, not a crash
    def on_line(r: CliRun, line: str) -> None:
        if "rows=" in line and not getattr(r, "termed", False):
            r.termed = True
            os.kill(r.proc.pid, signal.SIGTERM)

    run = CliRun(cmd, on_line=on_line)
    rc = run.wait(400)
    assert getattr(run, "termed", False) and rc == 0, run.text[-3000:]
    assert f"batch {b}: factors already applied" in run.text  # batch b's factors were in; its metrics replayed
    done = sorted(metrics(spark, crash)["batch_id"])
    assert done == list(range(len(done))) and b in done and len(done) < n_batches, done

    # 4. restart to the end: bit for bit the fault-free run, every batch and event once
    run = CliRun(cmd)
    assert run.wait(600) == 0, run.text[-3000:]
    got = assert_same_run(spark, clean.app.warehouse, crash.app.warehouse)
    assert list(got["metrics"]["batch_id"]) == list(range(n_batches)) and len(got["events"]) == len(df)
