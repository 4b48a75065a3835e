"""Delta tables for the server tests, written by the project's own Spark code (session Spark fixture).

``planted``: a model trained by ``DSGD(engine="local")`` on planted cluster data, written to ``factors``
with :class:`~dsgd.store.factor_store.FactorStore` (one commit, like a stream batch), its events in
``events`` (partitioned by event_date, like the trainer's), and an items-availability table.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from tests.serve.helpers import planted_events

RANK = 8


@dataclass
class Planted:
    cfg: object
    warehouse: str
    events: pd.DataFrame
    model: object
    items_table: str


def write_events(spark, path: str, ev: pd.DataFrame) -> None:
    from pyspark.sql import functions as F

    from dsgd.core import columns as C

    (spark.createDataFrame(ev[[C.USER, C.ITEM, C.RATING, C.TS, C.SEQ]], "user string, item string, rating float, "
                           "ts long, seq long")
     .withColumn(C.EVENT_DATE, F.to_date(F.timestamp_millis(C.TS)))
     .write.format("delta").mode("append").partitionBy(C.EVENT_DATE).save(path))


@pytest.fixture(scope="session")
def planted(spark, base_config, tmp_path_factory) -> Planted:
    from dsgd import DSGD
    from dsgd.engines.spark import side_to_spark
    from dsgd.store.factor_store import FactorStore
    from dsgd.store.tables import Tables

    root = tmp_path_factory.mktemp("serve")
    cfg = base_config.replace(app={"warehouse": str(root / "wh"), "checkpoint_root": str(root / "ck")},
                              model={"kind": "implicit", "rank": RANK})
    tables = Tables.from_config(cfg)
    ev = planted_events()
    model = DSGD(rank=RANK, kind="implicit", lr=0.1, negatives=8, epochs=25, blocks=2, engine="local",
                 seed=3).fit(ev)
    write_events(spark, tables.events, ev)
    store = FactorStore(spark, tables.factors)
    store.create(rank=RANK, kind="implicit")
    store.write(side_to_spark(spark, model.users), side_to_spark(spark, model.items), meta={"stream_id": "planted"},
                batch_id=0)
    items_table = str(root / "item_availability")
    spark.createDataFrame([("i0_1", False), ("i0_2", True), ("i1_0", True)], "item string, available boolean") \
        .write.format("delta").save(items_table)
    return Planted(cfg, tables.root, ev, model, items_table)
