"""Shared pieces of the streaming tests: a known stream with bad records, and reading results back."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsgd.core.contract import MAX_VALUE_BYTES
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
    (b"x" * (MAX_VALUE_BYTES + 1), "value_too_large"),  # one byte over the limit
]


def padded_event(user: str, item: str, ts: int, size: int) -> bytes:
    """A valid event whose JSON value is exactly ``size`` bytes (an unknown ``pad`` field fills it)."""
    head = json.dumps({"user": user, "item": item, "ts": ts})[:-1] + ', "pad": "'
    value = (head + "p" * (size - len(head) - 2) + '"}').encode()
    assert len(value) == size
    return value


#: A valid event of exactly the size limit: the boundary of ``value_too_large`` from the other side.
EDGE_EVENT = {"user": "edge-user", "item": "edge-item", "ts": 1_600_000_000_123}
EDGE_VALUE = padded_event(EDGE_EVENT["user"], EDGE_EVENT["item"], EDGE_EVENT["ts"], MAX_VALUE_BYTES)


def known_stream(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    return generate_stream(n, n_users=120, n_items=80, seed=seed, implicit=True)


@dataclass(frozen=True)
class Sent:
    """Where a record landed in Kafka (from the producer's acknowledgement)."""

    partition: int
    offset: int
    timestamp_ms: int


def produce(bootstrap: str, topic: str, df: pd.DataFrame, bad: list[tuple[bytes | None, str]] = (),
            extra: list[bytes] = ()) -> list[Sent]:
    """Events in time order with the bad records spread through the stream, keyed by user (bad ones by
    ``b"bad"``); ``extra`` raw values go last on partition 1. Returns the positions of the bad records,
    in the order of ``bad``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    step = max(1, len(df) // (len(bad) + 1))
    k = 0
    futures = []
    for i, row in enumerate(df.itertuples()):
        value = {"user": row.user, "item": row.item, "ts": int(row.ts)}
        producer.send(topic, key=row.user.encode(), value=json.dumps(value).encode(), partition=i % 2)
        if bad and i % step == step - 1 and k < len(bad):
            futures.append(producer.send(topic, key=b"bad", value=bad[k][0], partition=k % 2))
            k += 1
    for raw, _ in bad[k:]:
        futures.append(producer.send(topic, key=b"bad", value=raw, partition=0))
    for raw in extra:
        producer.send(topic, key=b"extra", value=raw, partition=1)
    producer.flush()
    sent = [f.get(timeout=60) for f in futures]
    producer.close()
    return [Sent(int(s.partition), int(s.offset), int(s.timestamp)) for s in sent]


def factors(spark, warehouse: str, version: int | None = None) -> pd.DataFrame:
    """The current factor rows (one per side + id) of the model in ``warehouse``, sorted."""
    from dsgd.store.factor_store import FactorStore

    df = FactorStore(spark, f"{warehouse}/factors").current(version).where("side != 'm'").toPandas()
    return df.sort_values(["side", "id"]).reset_index(drop=True)


def assert_same_factors(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-5) -> None:
    """Same ids, counts and (within ``atol``) vectors and biases; ``atol=0``: bit for bit."""
    assert list(a["side"] + a["id"]) == list(b["side"] + b["id"])
    if atol == 0:
        np.testing.assert_array_equal(np.stack(a["vec"]), np.stack(b["vec"]))
        np.testing.assert_array_equal(a["bias"].to_numpy(), b["bias"].to_numpy())
    else:
        np.testing.assert_allclose(np.stack(a["vec"]), np.stack(b["vec"]), atol=atol, rtol=1e-5)
        np.testing.assert_allclose(a["bias"].to_numpy(), b["bias"].to_numpy(), atol=atol)
    assert list(a["count"]) == list(b["count"])


# ---- a whole run compared with another ---------------------------------------------------------------
#: ``metrics`` columns that legitimately differ between two runs of the same stream: the query id,
#: timings and rates, wall-clock lags and timestamps, and whether a batch was a replay.
NONDETERMINISTIC_METRICS = {"stream_id", "rows_per_s", "lag_records", "lag_ms", "seconds_parse", "seconds_eval",
                            "seconds_train", "seconds_write", "seconds_total", "replayed", "written_at"}
#: Keys of the factor table's metadata row (and of its ``last_result``) that differ likewise.
_NONDETERMINISTIC_META = {"stream_id"} | NONDETERMINISTIC_METRICS


def _by_partition(offsets: str) -> str:
    """A batch's offsets JSON without the topic name (two runs may read the same records on two topics)."""
    return json.dumps({k.rsplit(":", 1)[1]: v for k, v in json.loads(offsets).items()}, sort_keys=True)


def _delta(spark, path: str) -> pd.DataFrame:
    return spark.read.format("delta").load(path).toPandas()


def run_tables(spark, warehouse: str) -> dict[str, pd.DataFrame]:
    """Every table of a run, normalised for an exact comparison with another run of the same records:
    factors (every column but the update time) and the metadata row (parsed, minus run-specific keys),
    events (every column), quarantine (every column but the time of quarantine) and the deterministic
    metrics columns; sorted by their keys."""
    from pyspark.sql import functions as F

    from dsgd.store.factor_store import FactorStore

    cur = FactorStore(spark, f"{warehouse}/factors").current().toPandas()
    meta_raw = cur.loc[cur["side"] == "m", "meta"].iloc[0]
    meta = {k: v for k, v in json.loads(meta_raw).items() if k not in _NONDETERMINISTIC_META}
    meta["offsets_end"] = _by_partition(json.dumps(meta.get("offsets_end", {})))
    meta["last_result"] = {k: (_by_partition(v) if k == "offsets" else v)
                           for k, v in meta.get("last_result", {}).items() if k not in _NONDETERMINISTIC_META}
    f = (cur[cur["side"] != "m"].drop(columns=["updated_at", "meta"])
         .sort_values(["side", "id"]).reset_index(drop=True))
    ev = _delta(spark, f"{warehouse}/events").sort_values("seq").reset_index(drop=True)
    out = {"factors": f, "meta": meta, "events": ev}
    try:
        q = (spark.read.format("delta").load(f"{warehouse}/quarantine")
             .withColumn("kafka_ms", F.unix_millis("kafka_ts")).drop("kafka_ts", "quarantined_at", "topic")
             .toPandas().sort_values(["partition", "offset"]).reset_index(drop=True))
    except Exception:  # noqa: BLE001 - no bad record, no table
        q = None
    out["quarantine"] = q
    m = _delta(spark, f"{warehouse}/metrics")
    m = m[[c for c in m.columns if c not in NONDETERMINISTIC_METRICS]].sort_values("batch_id").reset_index(drop=True)
    m["offsets"] = m["offsets"].map(_by_partition)
    out["metrics"] = m
    return out


def assert_same_run(spark, want_wh: str, got_wh: str) -> dict[str, pd.DataFrame]:
    """The run in ``got_wh`` equals the run in ``want_wh`` bit for bit: factors (atol 0), model metadata,
    every events and quarantine column, every deterministic metrics column; each batch and each event
    recorded once. Returns the tables of ``got_wh``."""
    want, got = run_tables(spark, want_wh), run_tables(spark, got_wh)
    assert got["metrics"]["batch_id"].is_unique, "a batch was recorded twice in metrics"
    assert got["events"]["seq"].is_unique, "an event was recorded twice"
    pd.testing.assert_frame_equal(got["factors"], want["factors"], check_exact=True)
    assert got["meta"] == want["meta"]
    pd.testing.assert_frame_equal(got["events"], want["events"], check_exact=True)
    if want["quarantine"] is None:
        assert got["quarantine"] is None
    else:
        assert got["quarantine"][["partition", "offset"]].drop_duplicates().shape[0] == len(got["quarantine"]), \
            "a record was quarantined twice"
        pd.testing.assert_frame_equal(got["quarantine"], want["quarantine"], check_exact=True)
    pd.testing.assert_frame_equal(got["metrics"], want["metrics"], check_exact=True)
    return got
