"""Saving a ``pyspark.ml`` :class:`~dsgd.api.ml.DSGDModel` to a Hadoop-compatible path and reading it back.

Layout under ``path`` (what MLlib's own models write): ``metadata/`` (one JSON line, written by
``DefaultParamsWriter.saveMetadata``: class, uid, Spark version, paramMap, defaultParamMap, plus a
``dsgd`` entry with the plain model's parameters, global mean, engine and history), ``users/`` and
``items/`` (Parquet: id, vec, bias, count) and ``seen/`` (Parquet: user, item). Everything is written
and read through Spark, so any path Spark's file systems take works (local, ``hdfs://``, ``s3a://``,
``abfss://``); ``write().overwrite()`` replaces an existing model as MLlib's writers do.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from dsgd.api.inputs import _json_default
from dsgd.core import columns as C
from dsgd.core.factors import list_array, list_matrix

FORMAT_VERSION = 1
SIDES = ("users", "items")


def _side_table(side: Any) -> pa.Table:
    return pa.table({C.ID: pa.array(side.ids.tolist(), pa.string()), C.VEC: list_array(side.vec),
                     C.BIAS: pa.array(side.bias, pa.float32()), C.COUNT: pa.array(side.count, pa.int64())})


class ModelWriter(MLWriter):
    """``MLWriter`` of :class:`~dsgd.api.ml.DSGDModel`."""

    def __init__(self, instance: Any) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:  # noqa: N802 - MLlib's name
        m = self.instance.model
        extra = {"dsgd": json.loads(json.dumps({"format_version": FORMAT_VERSION, "params": m.params, "mu": m.mu,
                                                "engine": m.engine, "history": m.history}, default=_json_default))}
        spark = self.sparkSession
        DefaultParamsWriter.saveMetadata(self.instance, path, spark, extraMetadata=extra)
        for name, side in zip(SIDES, (m.users, m.items), strict=True):
            spark.createDataFrame(_side_table(side)).write.parquet(f"{path.rstrip('/')}/{name}")
        seen = pa.table({C.USER: pa.array(m.seen[C.USER].tolist(), pa.string()),
                         C.ITEM: pa.array(m.seen[C.ITEM].tolist(), pa.string())})
        spark.createDataFrame(seen).write.parquet(f"{path.rstrip('/')}/seen")


class ModelReader(MLReader):
    """``MLReader`` of :class:`~dsgd.api.ml.DSGDModel`."""

    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> Any:
        from dsgd.api.model import DSGDModel as PlainModel

        spark = self.sparkSession
        meta = DefaultParamsReader.loadMetadata(path, spark)
        d = meta.get("dsgd", {})
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"DSGDModel.load: {path} is not a saved dsgd.api.ml.DSGDModel of format "
                             f"{FORMAT_VERSION} (found {d.get('format_version')!r})")
        rank = int(d["params"]["rank"])
        sides = []
        for name in SIDES:
            t = spark.read.parquet(f"{path.rstrip('/')}/{name}").toArrow()
            sides.append((np.asarray(t.column(C.ID).to_pylist(), dtype=object), list_matrix(t.column(C.VEC), rank),
                          t.column(C.BIAS).to_numpy().astype(np.float32),
                          t.column(C.COUNT).to_numpy().astype(np.int64)))
        seen = spark.read.parquet(f"{path.rstrip('/')}/seen").toPandas().astype(object)
        plain = PlainModel(params=d["params"], mu=d["mu"], engine=d["engine"], users=sides[0], items=sides[1],
                           history=d["history"], seen=seen)
        instance = self.cls(plain)
        instance._resetUid(meta["uid"])
        DefaultParamsReader.getAndSetParams(instance, meta)
        return instance
