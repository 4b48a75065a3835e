"""Concurrent one-user requests share one matrix product (dynamic batching, no added wait).

Scoring a user against every item reads the whole item matrix (25.6 MB at 10^5 items, rank 64): a
matrix-vector product is memory-bound. The users of requests that arrive while a product runs are
scored together in the next one, a matrix-matrix product that reads the items once (measured at 10^5
items, one core: 0.9 ms for one user, 2.9 ms for eight). A request that finds no product running is
scored at once, so a lone request waits for nothing. Each request then takes its own top-k in its own
thread. The scores are :meth:`dsgd.core.blend.BlendModel.scores`'s (the one definition); in a batch
they may differ from a lone product's in the last float32 bit.

Protocol: the thread that finds the queue idle leads: it takes up to ``max_batch`` queued jobs
(its own first), scores them, hands each its row, then promotes the oldest queued job's thread to lead
the next batch (or marks the queue idle). Followers sleep on their own event.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np

from dsgd.core.blend import BlendModel, UserFactors
from dsgd.serve.metrics import Metrics


class _Job:
    __slots__ = ("model", "users", "row", "error", "done", "lead")

    def __init__(self, model: BlendModel, users: UserFactors) -> None:
        self.model, self.users = model, users
        self.row: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False


class Coalescer:
    """``scores(model, one_user)`` for many threads; batches of at most ``max_batch`` users."""

    def __init__(self, max_batch: int = 32, metrics: Metrics | None = None) -> None:
        self.max_batch, self.metrics = max_batch, metrics
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._running = False
        self.batches = 0
        self.scored = 0

    def scores(self, model: BlendModel, user: UserFactors) -> np.ndarray:
        """The served scores ``[n_items]`` of one user (``len(user) == 1``)."""
        job = _Job(model, user)
        with self._lock:
            self._queue.append(job)
            lead = not self._running
            self._running = True
        if not lead:
            job.done.wait()
            if job.lead:  # promoted: score the next batch, ours included
                job.done.clear()
                lead = True
        if lead:
            self._lead()
            job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.row is not None
        return job.row

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._running = False

    def _run(self, batch: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = defaultdict(list)
        for job in batch:  # a swap may put two model versions in one batch
            groups[id(job.model)].append(job)
        for jobs in groups.values():
            try:
                s = jobs[0].model.scores(UserFactors.concat([j.users for j in jobs]))
                for n, j in enumerate(jobs):
                    j.row = s[n]
            except BaseException as exc:  # handed to every waiting request
                for j in jobs:
                    j.error = exc
            self.batches += 1
            self.scored += len(jobs)
            if self.metrics is not None:
                self.metrics.products.inc()
                self.metrics.product_users.inc(len(jobs))
            for j in jobs:
                j.done.set()
