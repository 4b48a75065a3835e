"""A maintenance pass touches only what changed since the last one, rewrites only past the garbage
ratio, and never changes the current model (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.store.factor_store import FactorStore
from dsgd.store.maintenance import maintain_factors, only_maintenance_since, table_rows

pytestmark = pytest.mark.spark


def _rows(spark, ids: list[str], rank: int = 3, fill: float = 0.5):
    side = SideFactors.empty(rank)
    arr = np.array(ids, dtype=object)
    side.ensure(arr, id_key(arr), rank, 1, 0.1, "i")
    side.vec[:] = fill
    return spark.createDataFrame(side.to_arrow())


def _current(store: FactorStore):
    df = store.current().where("side != 'm'").toPandas().sort_values(["side", "id"]).reset_index(drop=True)
    return df[["side", "id"]], np.stack(df["vec"])


def _files(spark, path: str) -> set[str]:
    return set(spark.read.format("delta").load(path).inputFiles())


def test_a_pass_bin_packs_the_appends_keeps_the_big_file_and_the_model(spark, tmp_path):
    store = FactorStore(spark, str(tmp_path / "factors"))
    store.create(rank=3, kind="implicit")
    store.write(None, _rows(spark, [f"i{n}" for n in range(200)]), meta={}, batch_id=0)
    store.compact()  # the "big" base file of the last rewrite
    base = _files(spark, store.path)
    for b in range(1, 6):  # five batches, each changing 10 items: 50 superseded versions < 200 model rows
        store.write(None, _rows(spark, [f"i{n}" for n in range(b * 10, b * 10 + 10)], fill=0.5 + b), meta={},
                    batch_id=b)
    ids_before, vec_before = _current(store)
    files_before = _files(spark, store.path)
    base_names = {f.rsplit("/", 1)[-1] for f in base}
    big = min(p.stat().st_size for p in (tmp_path / "factors").rglob("*.parquet") if p.name in base_names)
    res = maintain_factors(store, model_rows=200, garbage_ratio=1.0, small_file_bytes=big, retention_hours=168)
    assert not res.rewrote and res.table_rows == 200 + 50 + 6  # rows + superseded versions + metadata rows
    after = _files(spark, store.path)
    assert base & after == base  # the rewrite's files were not touched
    assert len(after) < len(files_before)  # the batches' small files were bin-packed
    ids_after, vec_after = _current(store)
    assert ids_after.equals(ids_before) and np.array_equal(vec_after, vec_before)
    assert only_maintenance_since(spark, store.path, res.version_before)


def test_a_pass_rewrites_only_past_the_garbage_ratio_and_a_write_is_not_maintenance(spark, tmp_path):
    store = FactorStore(spark, str(tmp_path / "factors"))
    store.create(rank=3, kind="implicit")
    store.write(None, _rows(spark, [f"i{n}" for n in range(20)]), meta={}, batch_id=0)
    for b in range(1, 4):  # 60 superseded versions > 1.0 x 20 model rows
        store.write(None, _rows(spark, [f"i{n}" for n in range(20)], fill=b), meta={}, batch_id=b)
    ids_before, vec_before = _current(store)
    res = maintain_factors(store, model_rows=20, garbage_ratio=1.0, small_file_bytes=64 << 20, retention_hours=168)
    assert res.rewrote and table_rows(spark, store.path) == 20 + 1
    ids_after, vec_after = _current(store)
    assert ids_after.equals(ids_before) and np.array_equal(vec_after, vec_before)
    assert only_maintenance_since(spark, store.path, res.version_before)
    v = store.version()
    store.write(None, _rows(spark, ["i0"], fill=9.0), meta={}, batch_id=4)
    assert not only_maintenance_since(spark, store.path, v)
