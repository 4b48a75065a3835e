"""The trainer runs for many micro-batches, across maintenance passes, without slowing down.

Nothing is carried from batch to batch as a DataFrame, so the plan cannot grow; what could grow is the
factor table's files and row versions, which maintenance bounds (:mod:`dsgd.store.maintenance`: every
pass bin-packs the small files to one file per side and VACUUMs; it rewrites to one row per key once
the superseded row versions outnumber ``stream.compaction_garbage_ratio`` x the model's rows), and the
Delta logs, which Delta checkpoints. Each micro-batch
costs a few seconds of fixed Spark/Delta work on a 2-core machine, so CI runs 16 batches with
maintenance every 5 (three passes); ``DSGD_LONG_RUN_BATCHES=200`` runs the full-length version
(maintenance every 12).

Slowing down is judged on CPU time (the driver JVM's, which runs Spark's local executors, plus this
Python process's), not wall time: on a shared machine wall time follows the other processes' load, CPU
time follows the work. It is sampled at the same point of every batch (after its metrics row), so the
interval of a batch holds its own work, Spark's commit of the batch before and, after a maintenance
batch, the maintenance pass. Intervals with a maintenance pass or a Delta log checkpoint (found by the
checkpoint files' times) are compared separately or left out: they cost more once, by design.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from streaming.trainer import StreamTrainer
from tests.faults.helpers import children, cmdline
from tests.kafka.stream_helpers import factors, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

BATCHES = int(os.environ.get("DSGD_LONG_RUN_BATCHES", "16"))
EVERY = 5 if BATCHES < 60 else 12
#: CPU per batch may grow by this much from the first to the last window (means of 3+ plain batches).
#: Plain batches of one warm run differ by up to ~50 % (GC, JIT, the factor files growing between
#: maintenance passes); a planted slowdown of 0.12 s more CPU per batch per batch gives 1.9x at 16
#: batches and fails this check.
CPU_GROWTH = 1.5


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class _CpuClock:
    """A fault hook that raises nothing: samples CPU and wall time after each batch's metrics row."""

    def __init__(self) -> None:
        me = os.getpid()
        self.pids = [me, *(p for p in children(me) if "SparkSubmit" in cmdline(p))]
        assert len(self.pids) == 2, "the driver JVM was not found"
        self.samples: list[tuple[int, float, float]] = []  # (batch id, cpu s, wall s: the file clock)

    def now(self) -> tuple[float, float]:
        return sum(_cpu_seconds(p) for p in self.pids), time.time()

    def __call__(self, point: str, batch_id: int) -> None:
        if point == "after_metrics":
            self.samples.append((batch_id, *self.now()))


def _log_replay(path: str) -> list[tuple[int, int, str]]:
    """(version, active data files after it, operation) for every commit of the Delta table at ``path``."""
    active: set[str] = set()
    out = []
    for f in sorted(Path(path, "_delta_log").glob("*.json")):
        op = ""
        for line in f.read_text().splitlines():
            a = json.loads(line)
            if "add" in a:
                active.add(a["add"]["path"])
            elif "remove" in a:
                active.discard(a["remove"]["path"])
            elif "commitInfo" in a:
                op = a["commitInfo"].get("operation", "") + " " + (a["commitInfo"].get("userMetadata") or "")
        out.append((int(f.stem), len(active), op))
    return out


def _checkpoint_intervals(wh: str, walls: list[float]) -> set[int]:
    """The sampling intervals in which some table's Delta log checkpoint was written (by file time)."""
    out = set()
    for name in ("factors", "events", "metrics"):
        for f in Path(wh, name, "_delta_log").glob("*.checkpoint*.parquet"):
            k = int(np.searchsorted(walls, f.stat().st_mtime)) - 1
            if 0 <= k < len(walls) - 1:
                out.add(k)
    return out


def test_many_micro_batches_across_maintenance_without_slowdown(spark, kafka_broker, topic, cfg):
    per_batch = 6  # records per micro-batch (3 per partition)
    df = known_stream(BATCHES * per_batch, seed=11)
    produce(kafka_broker.bootstrap, topic, df)
    cfg = cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": per_batch},
                      stream={"trigger": "available_now", "maintenance_every": EVERY, "eval_max_events": 100},
                      model={"engine": "local", "negatives": 4})
    clock = _CpuClock()
    trainer = StreamTrainer(spark, cfg, fault_hook=clock)
    # a hang guard, not a speed check (that is the CPU comparison below): 16 batches took over 8 min at load 27
    assert trainer.run(timeout_s=BATCHES * 90) == 0
    clock.samples.append((BATCHES, *clock.now()))  # the last maintenance pass and the query's stop
    wh = cfg.app.warehouse

    m = spark.read.format("delta").load(f"{wh}/metrics").toPandas().sort_values("batch_id")
    assert list(m["batch_id"]) == list(range(BATCHES)) and m["rows_valid"].sum() == len(df)
    f = factors(spark, wh)
    assert f.loc[f.side == "u", "count"].sum() == len(df)

    # maintenance ran every EVERY batches (a pass ends with its VACUUM); each pass left at most one file
    # per side and at most 1 + ratio row versions per model row, exactly one per key after a rewrite
    passes = [b for b in range(1, BATCHES) if b % EVERY == 0]
    ratio = cfg.stream.compaction_garbage_ratio
    log = _log_replay(f"{wh}/factors")
    ends = [i for i, (_, _, op) in enumerate(log) if op.startswith("VACUUM END")]
    assert len(ends) == len(passes) >= 3, [op for _, _, op in log]
    after_pass, rewrites = [], 0
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        v, files, _ = log[end]
        rewrote = any("dsgd-compact" in op for _, _, op in log[start + 1:end])
        rewrites += rewrote
        stored = spark.read.format("delta").option("versionAsOf", v).load(f"{wh}/factors").count()
        current = len(factors(spark, wh, version=v)) + 1  # + the metadata row
        assert files <= 3 and current <= stored <= current + ratio * (current - 1), (v, files, stored, current)
        assert stored == current or not rewrote, (v, stored, current)
        after_pass.append(files)
    assert rewrites >= 1, [op for _, _, op in log]  # the garbage bound was reached and acted on
    # between passes the files grow with the batches, and no more in the last cycle than in the first
    cycles = [max(n for _, n, _ in log[a:b]) for a, b in zip(ends[:-1], ends[1:], strict=True)]
    assert cycles and cycles[-1] <= cycles[0], cycles
    # every table's Delta log is checkpointed: a reader replays at most 10 commits
    for name in ("factors", "events", "metrics"):
        last_cp = json.loads(Path(wh, name, "_delta_log", "_last_checkpoint").read_text())["version"]
        latest = max(int(p.stem) for p in Path(wh, name, "_delta_log").glob("*.json"))
        assert latest - last_cp <= 10, (name, latest, last_cp)

    # no slowdown: CPU per batch in the last window vs the first (warm-up and maintenance intervals apart)
    ids = [b for b, _, _ in clock.samples]
    assert ids == list(range(BATCHES + 1)), ids
    cpu = np.diff([c for _, c, _ in clock.samples])  # interval k: batch k + 1 (and maintenance after batch k)
    wall = np.diff([w for _, _, w in clock.samples])
    batch_of = np.arange(1, BATCHES + 1)
    maint = np.isin(batch_of - 1, passes)
    # a batch that also writes a Delta log checkpoint (every 10 commits of each of three tables) costs
    # ~1 s more once, which is not a slowdown: those intervals are left out, like the maintenance ones
    checkpointed = np.isin(np.arange(BATCHES), sorted(_checkpoint_intervals(wh, [w for _, _, w in clock.samples])))
    plain = np.flatnonzero(~maint & ~checkpointed & (batch_of >= 3) & (batch_of < BATCHES))
    window = max(3, len(plain) // 3)
    first, last = plain[:window], plain[-window:]
    assert len(plain) >= 2 * window, ("too few plain batches to compare; raise DSGD_LONG_RUN_BATCHES", plain)
    report = {"cpu_first": round(float(cpu[first].mean()), 3), "cpu_last": round(float(cpu[last].mean()), 3),
              "wall_first": round(float(wall[first].mean()), 3), "wall_last": round(float(wall[last].mean()), 3),
              "cpu_maintenance_intervals": [round(float(x), 2) for x in cpu[maint]],
              "wall_maintenance_intervals": [round(float(x), 2) for x in wall[maint]],
              "cpu_per_interval": [round(float(x), 2) for x in cpu], "checkpoint_intervals": np.flatnonzero(checkpointed).tolist(),
              "files_after_each_pass": after_pass,
              "peak_files_per_cycle": cycles, "rewrites": rewrites}
    print("LONG_RUN " + json.dumps(report))
    assert cpu[last].mean() <= CPU_GROWTH * cpu[first].mean(), report
    # a maintenance pass costs no more at the end of the run than early on (the first pass also compiles
    # and loads the compaction's code: the comparison starts at the second; the last interval also holds
    # the query's stop, hence one plain batch of slack)
    mc = cpu[maint][1:]
    k = max(1, len(mc) // 3)
    assert mc[-k:].mean() <= CPU_GROWTH * mc[:k].mean() + cpu[first].mean(), report
