"""The factors table as an append log of row versions: the current model, compare-and-swap, compaction,
rollback, and the SQL the README gives for reading it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.store.errors import StaleModel
from dsgd.store.factor_store import FactorStore

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "id string, key long, vec array<float>, bias float, count long"


def _rows(spark, values: dict[str, float]):
    return (spark.createDataFrame([(k, 0, [v, -v], v / 10, 1) for k, v in values.items()], SCHEMA)
            .withColumn(C.KEY, F.xxhash64(C.ID)))


def _model(store: FactorStore, version: int | None = None) -> dict[tuple[str, str], list[float]]:
    return {(r.side, r.id): list(r.vec) for r in store.current(version).where("side != 'm'").collect()}


@pytest.fixture()
def store(spark, tmp_path):
    s = FactorStore(spark, str(tmp_path / "factors"))
    s.create(rank=2, kind="implicit")
    assert s.write(_rows(spark, {"u1": 1.0, "u2": 2.0}), _rows(spark, {"i1": 3.0}), meta={}, batch_id=0)
    assert s.write(_rows(spark, {"u1": 5.0}), None, meta={"mu": 0.5}, batch_id=1)
    return s


def test_current_model_is_the_latest_version_of_each_row_and_the_readme_sql_reads_it(spark, store):
    raw = store.table().where("side = 'u' AND id = 'u1'").count()
    assert raw == 2  # both versions are stored
    model = _model(store)
    assert model == {("u", "u1"): [5.0, -5.0], ("u", "u2"): [2.0, -2.0], ("i", "i1"): [3.0, -3.0]}
    assert store.meta()["mu"] == 0.5 and store.meta()["last_batch"] == 1
    assert [r.id for r in store.load(C.SIDE_USER).orderBy(C.ID).collect()] == ["u1", "u2"]
    # time travel reads the model as it was
    assert _model(store, store.version() - 1)[("u", "u1")] == [1.0, -1.0]

    readme = (ROOT / "README.md").read_text()
    sql = re.search(r"```sql\n(SELECT .*?max_by.*?)```", readme, flags=re.S).group(1)
    sql = sql.replace("/data/warehouse/factors", store.path)
    via_sql = {(r.side, r.id): list(r.vec) for r in spark.sql(sql).where("side != 'm'").collect()}
    assert via_sql == model


def test_a_write_from_a_stale_head_raises_and_commits_nothing(spark, store):
    head = store.head()
    assert store.write(_rows(spark, {"u2": 7.0}), None, meta={}, batch_id=2, expected=head)  # the winner
    version, model = store.version(), _model(store)
    with pytest.raises(StaleModel):  # computed from the same head: Delta skips its transaction
        store.write(_rows(spark, {"u1": 9.0}), None, meta={}, batch_id=3, expected=head)
    assert store.version() == version and _model(store) == model
    # from the new head it goes in
    assert store.write(_rows(spark, {"u1": 9.0}), None, meta={}, batch_id=3, expected=store.head())
    assert _model(store)[("u", "u1")] == [9.0, -9.0]


def test_a_replayed_batch_is_skipped(spark, store):
    version = store.version()
    assert not store.write(_rows(spark, {"u1": 8.0}), None, meta={}, batch_id=1)
    assert store.version() == version and _model(store)[("u", "u1")] == [5.0, -5.0]


def test_compaction_keeps_the_model_and_one_row_per_key(spark, store):
    model, meta = _model(store), store.meta()
    assert store.table().count() > len(model) + 1
    store.compact()
    assert store.table().count() == len(model) + 1  # + the metadata row
    assert _model(store) == model and store.meta() == meta
    assert store.write(_rows(spark, {"u3": 4.0}), None, meta={}, batch_id=2)  # the sequence continues
    assert _model(store)[("u", "u3")] == [4.0, -4.0]


def test_rollback_installs_an_old_version_and_beats_a_writer_that_read_before_it(spark, store):
    old = store.version() - 1
    stale = store.head()
    store.restore(version=old)
    assert _model(store) == _model(store, old) and store.meta() == store.meta(old)
    with pytest.raises(StaleModel):  # a batch computed from the replaced model must be recomputed
        store.write(_rows(spark, {"u2": 6.0}), None, meta={}, batch_id=2, expected=stale)
    assert _model(store) == _model(store, old)


def test_writes_continue_after_a_sql_restore(spark, store):
    """A SQL RESTORE rolls the rows back but not Delta's transaction version: the sequence comes from
    the larger of the two, so later writes are not skipped as duplicates."""
    old_model = _model(store, 1)
    DeltaTable.forPath(spark, store.path).restoreToVersion(1)
    assert _model(store) == old_model
    assert store.write(_rows(spark, {"u9": 1.5}), None, meta={}, batch_id=5)
    assert _model(store)[("u", "u9")] == [1.5, -1.5]
    assert store.head().seq > 2


def test_a_table_without_model_seq_is_read_and_upgraded(spark, tmp_path):
    path = str(tmp_path / "old")
    (spark.createDataFrame([("m", "model", 0, None, None, None, 3, None,
                             '{"kind": "implicit", "last_batch": 3, "rank": 2}'),
                            ("u", "u1", 0, [1.0, 1.0], 0.0, 1, 3, None, None)],
                           "side string, id string, key long, vec array<float>, bias float, count long, "
                           "last_batch long, updated_at timestamp, meta string")
     .write.format("delta").partitionBy(C.SIDE).save(path))
    store = FactorStore(spark, path)
    assert store.meta()["last_batch"] == 3 and _model(store) == {("u", "u1"): [1.0, 1.0]}
    assert store.write(_rows(spark, {"u1": 2.0}), None, meta={}, batch_id=4)
    assert _model(store) == {("u", "u1"): [2.0, -2.0]}
    assert np.isclose(store.load(C.SIDE_USER).first().bias, 0.2)
