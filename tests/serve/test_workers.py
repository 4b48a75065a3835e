"""``serve.workers = 2``: two worker processes on the one port, each with its own model, their request
counts summed in /metrics (Prometheus multiprocess mode), a killed worker replaced by the supervisor
without a failed request, and SIGTERM stopping every process."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dsgd.core import metric_names as N
from dsgd.ops.processes import cmdline, process_tree
from tests.serve.helpers import Server, wait_for

RECS = "/users/{user}/recommendations"


def _workers(srv: Server) -> set[int]:
    return {p for p in process_tree([srv.proc.pid]) if "multiprocessing.spawn" in cmdline(p)}


def _samples(srv: Server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(srv.url + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _answered(srv: Server) -> float:
    return _samples(srv).get((f"{N.SERVE_REQUESTS}_total", (("endpoint", RECS), ("status", "200"))), 0.0)


def _burst(srv: Server, users: list[str]) -> list[int]:
    """One request per user, 8 at a time, each on a new connection (the kernel spreads them over the workers)."""
    def one(user: str) -> int:
        return httpx.get(f"{srv.url}/users/{user}/recommendations", params={"k": 5}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, users))


def test_two_workers_share_the_port_sum_their_metrics_and_survive_a_killed_worker(planted, tmp_path):
    srv = Server([f'app.warehouse="{planted.warehouse}"', "serve.workers=2"], tmp_path / "serve.log").start()
    try:
        workers = _workers(srv)
        assert len(workers) == 2, workers
        wait_for(lambda: _samples(srv).get((f"{N.SERVE_RELOADS}_total", (("kind", "full"), ("table", "factors"))))
                 == 2.0, 60, "both workers to load the model")  # each worker loads its own copy
        users = sorted(planted.events["user"].unique())[:40]
        assert _burst(srv, users) == [200] * 40
        assert _answered(srv) == 40  # summed over both workers, whichever answered the scrape

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(_workers(srv) - {victim}) == 2, 60, "the supervisor to replace the killed worker")
        wait_for(lambda: _samples(srv).get((f"{N.SERVE_RELOADS}_total", (("kind", "full"), ("table", "factors"))))
                 == 3.0, 60, "the new worker to load the model")
        assert _burst(srv, users) == [200] * 40
        assert _answered(srv) == 80  # the killed worker's counts stay in the sum

        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        deadline = time.monotonic() + 20
        while process_tree([srv.proc.pid, *workers]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_tree([srv.proc.pid, *workers]), "worker processes left after SIGTERM"
    finally:
        srv.stop()
