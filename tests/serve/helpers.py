"""A real ``python -m dsgd serve`` process on a free loopback port, and planted data for the server tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]

#: Planted taste clusters: items i<c>_<j> of cluster c; cluster 0 is by far the most popular.
CLUSTERS, PER_CLUSTER = 4, 25


def planted_events(n_users: int = 120, events_per_user: int = 24, seed: int = 11, prefix: str = "u",
                   t0: int = 1_700_000_000_000) -> pd.DataFrame:
    """Implicit events: each user has a home cluster and 90% of their events fall in it; cluster 0 holds
    half of the users, so popularity favours its items while other users want their own cluster's."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        home = 0 if u % 2 == 0 else 1 + (u // 2) % (CLUSTERS - 1)
        for e in range(events_per_user):
            c = home if rng.random() < 0.9 else int(rng.integers(CLUSTERS))
            j = min(int(rng.zipf(1.6)) - 1, PER_CLUSTER - 1)
            rows.append((f"{prefix}{u}", f"i{c}_{j}", t0 + (u * events_per_user + e) * 1000))
    df = pd.DataFrame(rows, columns=["user", "item", "ts"])
    df["rating"] = np.nan
    df["seq"] = np.arange(len(df), dtype=np.int64)
    return df


def wait_for(cond, timeout: float, message: str, every: float = 0.05):
    """Poll ``cond()`` until it is truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(message)


def cluster_of(item: str) -> int:
    return int(item[1:].split("_")[0])


class Server:
    """``python -m dsgd serve --port 0`` with ``--set`` overrides; the URL comes from its first stdout line.
    Stopped by its own PID; stderr (the server log) is kept in ``log_path``."""

    def __init__(self, overrides: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.overrides, self.log_path = overrides, log_path
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> Server:
        args = [sys.executable, "-m", "dsgd", "serve", "--port", "0"]
        for o in self.overrides:
            args += ["--set", o]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not first or not first[0].strip():
            self.stop()
            raise RuntimeError(f"dsgd serve did not start: {self.log_path.read_text()[-3000:]}")
        self.url = json.loads(first[0])["serving"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("dsgd serve never answered /health")

    def wait_ready(self, version: int | None = None, timeout: float = 120.0, **headers: str) -> dict:
        """Wait until /ready answers 200 (with ``model_version >= version`` if given)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = httpx.get(self.url + "/ready", timeout=10, headers=headers)
            last = r.json()
            if r.status_code == 200 and (version is None or last["model_version"] >= version):
                return last
            time.sleep(0.05)
        raise AssertionError(f"not ready with version {version} after {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
