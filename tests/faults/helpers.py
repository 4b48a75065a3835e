"""Shared pieces of the fault suite: per-test configs, reading the Delta tables back, running the CLI in a
subprocess, producing explicit / raw records, and deleting records from Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dsgd.core.config import Config

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

#: The stream the kill/restart and broker-restart tests replay (fixture ``fault_free_run``), and its batch size.
REFERENCE_EVENTS, REFERENCE_SEED, REFERENCE_BATCH = 1600, 17, 200


def stream_cfg(cfg: Config, topic: str, root: Path, *, kafka: dict | None = None, stream: dict | None = None,
               **model: Any) -> Config:
    """The suite's small, deterministic stream config with its own warehouse and checkpoints under ``root``."""
    return cfg.replace(
        app={"warehouse": str(root / "wh"), "checkpoint_root": str(root / "ck")},
        kafka={"topic": topic, "max_offsets_per_trigger": 400, **(kafka or {})},
        stream={"trigger": "available_now", "eval_max_events": 300, **(stream or {})},
        model={"engine": "local", "blocks": 2, "negatives": 4, "lr": 0.1, **model})


def table(spark, cfg: Config, name: str) -> pd.DataFrame:
    """A table of the deployment; for ``factors`` the current model (one row per side + id)."""
    if name == "factors":
        from dsgd.store.factor_store import FactorStore

        return FactorStore(spark, f"{cfg.app.warehouse}/factors").current().toPandas()
    return spark.read.format("delta").load(f"{cfg.app.warehouse}/{name}").toPandas()


def metrics(spark, cfg: Config) -> pd.DataFrame:
    return table(spark, cfg, "metrics").sort_values("batch_id").reset_index(drop=True)


def produce_raw(bootstrap: str, topic: str, values: Iterable[bytes | None], *, partition: int | None = None,
                key: bytes = b"k") -> int:
    """Send raw values (in order) to ``topic``; returns how many were sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20, acks="all")
    n = 0
    for i, v in enumerate(values):
        producer.send(topic, key=key, value=v, partition=partition if partition is not None else i % 2)
        n += 1
    producer.flush()
    producer.close()
    return n


def explicit_values(df: pd.DataFrame) -> list[bytes]:
    """Wire values of an explicit stream (user, item, rating, ts)."""
    return [json.dumps({"user": r.user, "item": r.item, "rating": float(r.rating), "ts": int(r.ts)}).encode()
            for r in df.itertuples()]


def implicit_values(df: pd.DataFrame) -> list[bytes]:
    return [json.dumps({"user": r.user, "item": r.item, "ts": int(r.ts)}).encode() for r in df.itertuples()]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: int(off) for tp, off in ends.items()}
    finally:
        consumer.close()


def delete_records(bootstrap: str, topic: str, before: dict[int, int]) -> None:
    """Delete the records of ``topic`` below offset ``before[partition]`` (kafka-python 2.3 admin API)."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.delete_records({TopicPartition(topic, p): int(off) for p, off in before.items()})
    finally:
        admin.close()


def write_conf(path: Path, cfg: Config, sections: Iterable[str] = ("app", "kafka", "stream", "model")) -> Path:
    """A TOML file holding the given sections of ``cfg`` (for ``--conf``)."""
    lines: list[str] = []
    data = cfg.to_dict()
    for sec in sections:
        lines.append(f"[{sec}]")
        for k, v in data[sec].items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {json.dumps(v)}")  # JSON scalars are valid TOML scalars
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYSPARK_PYTHON=PYTHON, PYSPARK_DRIVER_PYTHON=PYTHON, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class CliRun:
    """``python -m dsgd <args>`` (or another ``module``) in a subprocess; stderr is collected line by line
    (and can be watched)."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None,
                 on_line: Callable[[CliRun, str], None] | None = None, module: str = "dsgd") -> None:
        self.lines: list[str] = []
        self.on_line = on_line
        self.proc = subprocess.Popen([PYTHON, "-m", module, *args], cwd=ROOT, env=env or cli_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(self, line)

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"dsgd did not finish in {timeout}s:\n{self.text[-4000:]}") from None
        self._reader.join(10)
        return rc

    @property
    def text(self) -> str:
        return "".join(self.lines)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (raises if the process or its VmRSS line is not there)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise FileNotFoundError(f"no VmRSS for process {pid}")


def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
