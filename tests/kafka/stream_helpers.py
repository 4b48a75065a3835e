"""Shared pieces of the streaming tests: a known stream with bad records, and reading results back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dsgd.evaluation.synthetic import generate_stream

#: Bad records of every kind, each with the reason it must be quarantined with.
BAD_RECORDS: list[tuple[bytes | None, str]] = [
    (b"not json at all", "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (b"", "empty_value"),
    (None, "empty_value"),
    (b'{"item": "i1", "ts": 1600000000000}', "missing_user"),
    (b'{"user": null, "item": "i1"}', "missing_user"),
    (b'{"user": "u1", "ts": 1600000000000}', "missing_item"),
    (b'{"user": {"nested": 1}, "item": "i1"}', "bad_user"),
    (b'{"user": "u1", "item": [1, 2]}', "bad_item"),
    (b'{"user": "' + b"x" * 600 + b'", "item": "i1"}', "bad_user"),
    (b'{"user": "u1", "item": "i1", "rating": "lots"}', "bad_rating"),
    (b'{"user": "u1", "item": "i1", "rating": NaN}', "malformed_json"),  # NaN is not JSON
    (b'{"user": "u1", "item": "i1", "rating": 1e400}', "non_finite_rating"),
    (b'{"user": "u1", "item": "i1", "rating": -1e39}', "non_finite_rating"),  # beyond a 32-bit float
    (b'{"user": true, "item": "i1"}', "bad_user"),
    (b'{"user": "u1", "item": "i1", "ts": "yesterday"}', "bad_ts"),
    (b'{"user": "u1", "item": "i1", "ts": -5}', "bad_ts"),
    (b"x" * (1 << 20 + 1), "value_too_large"),
]


def known_stream(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    return generate_stream(n, n_users=120, n_items=80, seed=seed, implicit=True)


def produce(bootstrap: str, topic: str, df: pd.DataFrame, bad: list[tuple[bytes | None, str]] = ()) -> None:
    """Events in time order with the bad records spread through the stream, keyed by user."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    step = max(1, len(df) // (len(bad) + 1))
    k = 0
    for i, row in enumerate(df.itertuples()):
        value = {"user": row.user, "item": row.item, "ts": int(row.ts)}
        producer.send(topic, key=row.user.encode(), value=json.dumps(value).encode(), partition=i % 2)
        if bad and i % step == step - 1 and k < len(bad):
            producer.send(topic, key=b"bad", value=bad[k][0], partition=k % 2)
            k += 1
    for raw, _ in bad[k:]:
        producer.send(topic, key=b"bad", value=raw, partition=0)
    producer.flush()
    producer.close()


def factors(spark, warehouse: str, version: int | None = None) -> pd.DataFrame:
    """The current factor rows (one per side + id) of the model in ``warehouse``, sorted."""
    from dsgd.store.factor_store import FactorStore

    df = FactorStore(spark, f"{warehouse}/factors").current(version).where("side != 'm'").toPandas()
    return df.sort_values(["side", "id"]).reset_index(drop=True)


def assert_same_factors(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-5) -> None:
    assert list(a["side"] + a["id"]) == list(b["side"] + b["id"])
    np.testing.assert_allclose(np.stack(a["vec"]), np.stack(b["vec"]), atol=atol, rtol=1e-5)
    np.testing.assert_allclose(a["bias"].to_numpy(), b["bias"].to_numpy(), atol=atol)
    assert list(a["count"]) == list(b["count"])
