"""Concurrent one-user requests share matrix products and get the scores of a lone product."""

from __future__ import annotations

import threading

import numpy as np

from dsgd.core.blend import BlendModel, UserFactors
from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.serve.batching import Coalescer


def test_concurrent_requests_are_batched_and_each_gets_its_own_row():
    rng = np.random.default_rng(0)
    ids = np.array([f"i{j}" for j in range(20000)], dtype=object)
    items = SideFactors(id_key(ids), ids, rng.standard_normal((len(ids), 16)).astype(np.float32),
                        np.zeros(len(ids), np.float32), np.zeros(len(ids), np.int64))
    model = BlendModel.from_sides(items)
    users = [UserFactors.one(16, online=(rng.standard_normal(16).astype(np.float32), 0.0)) for _ in range(64)]
    co = Coalescer(max_batch=8)
    out: dict[int, np.ndarray] = {}

    def ask(j: int) -> None:
        out[j] = co.scores(model, users[j])

    threads = [threading.Thread(target=ask, args=(j,)) for j in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(out) == list(range(64)) and co.scored == 64
    assert co.batches < 64  # some requests shared a product
    for j, row in out.items():
        np.testing.assert_allclose(row, model.scores(users[j])[0], rtol=1e-6, atol=1e-5)  # float32 sums of ~10
    np.testing.assert_array_equal(co.scores(model, users[0]), model.scores(users[0])[0])  # alone: the same product
