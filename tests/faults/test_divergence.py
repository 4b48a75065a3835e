"""Item 6: the divergence guard rejects a batch whose factors blow up; the previous model stays current."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsgd.evaluation.synthetic import generate_stream
from dsgd.store.factor_store import FactorStore
from streaming.trainer import StreamTrainer
from tests.faults.helpers import explicit_values, metrics, produce_raw, stream_cfg, table
from tests.kafka.stream_helpers import assert_same_factors, factors

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def _finite(f):
    return np.isfinite(np.stack(f["vec"])).all() and np.isfinite(f["bias"].to_numpy(float)).all()


def test_extreme_learning_rate_batch_is_rejected_with_an_alert_and_nothing_non_finite_is_written(
        spark, kafka_broker, topic, cfg, tmp_path):
    df = generate_stream(600, n_users=40, n_items=30, seed=8, implicit=False)
    produce_raw(kafka_broker.bootstrap, topic, explicit_values(df))
    c = stream_cfg(cfg, topic, tmp_path, kind="explicit", lr=100.0, kafka={"max_offsets_per_trigger": 300})
    assert StreamTrainer(spark, c).run(timeout_s=300) == 0
    m = metrics(spark, c)
    assert len(m) == 2 and m["rejected"].all(), m[["batch_id", "rejected", "alert"]]
    assert m["alert"].str.contains("divergence").all() and m["alert"].str.contains("rejected").all()
    assert (m["users_touched"] == 0).all()
    f = table(spark, c, "factors")
    assert (f["side"] == "m").all(), "a divergent batch wrote factor rows"
    meta = json.loads(f["meta"].iloc[0])
    assert meta["alerts"] == 2 and meta["last_batch"] == 1 and meta["n_ratings"] == 0
    # the events themselves are kept (history), only the model refused them
    assert len(table(spark, c, "events")) == len(df)


def test_divergent_batch_keeps_the_previous_model_current(spark, kafka_broker, topic, cfg, tmp_path):
    """A good model, then a batch whose (in-range) ratings overflow float32 in the SGD: rejected, and
    the factor rows are exactly those of before; the next good batch trains on from them."""
    c = stream_cfg(cfg, topic, tmp_path, kind="explicit", lr=0.05, rating_min=0.0, rating_max=1e38,
                   kafka={"max_offsets_per_trigger": 1000})
    good = generate_stream(500, n_users=40, n_items=30, seed=9, implicit=False)
    produce_raw(kafka_broker.bootstrap, topic, explicit_values(good))
    assert StreamTrainer(spark, c).run(timeout_s=300) == 0
    before = factors(spark, c.app.warehouse)
    store = FactorStore(spark, f"{c.app.warehouse}/factors")
    meta_before = store.meta()

    bomb = good.iloc[:200].copy()
    bomb["rating"] = 1e30
    bomb["ts"] = bomb["ts"] + 10**9
    produce_raw(kafka_broker.bootstrap, topic, explicit_values(bomb))
    assert StreamTrainer(spark, c).run(timeout_s=300) == 0
    m = metrics(spark, c)
    last = m.iloc[-1]
    assert bool(last["rejected"]) and "divergence" in last["alert"], last
    assert not m.iloc[:-1]["rejected"].any()
    after = factors(spark, c.app.warehouse)
    assert _finite(after)
    assert_same_factors(before, after, atol=0)
    meta_after = store.meta()
    assert meta_after["mu"] == meta_before["mu"] and meta_after["n_ratings"] == meta_before["n_ratings"]
    assert meta_after["alerts"] == meta_before.get("alerts", 0) + 1
    assert meta_after["last_batch"] == int(last["batch_id"])  # the offsets moved on: no endless retry

    more = generate_stream(300, n_users=40, n_items=30, seed=10, implicit=False)
    more["ts"] = more["ts"] + 2 * 10**9
    produce_raw(kafka_broker.bootstrap, topic, explicit_values(more))
    assert StreamTrainer(spark, c).run(timeout_s=300) == 0
    final = factors(spark, c.app.warehouse)
    assert _finite(final) and final["count"].sum() == before["count"].sum() + 2 * len(more)
