"""The Spark side of a :class:`~dsgd.api.DSGDModel` (mixed into it): factors as DataFrames, and
``transform`` of a Spark DataFrame scored with the same definition as ``predict``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dsgd.api.inputs import _active_spark, _spark_id
from dsgd.core import columns as C
from dsgd.core.factors import SideFactors, list_matrix
from dsgd.core.scoring import score_pairs

PREDICTION = "prediction"


class SparkViews:
    """The Spark methods of :class:`~dsgd.api.DSGDModel`."""

    @property
    def userFactors(self) -> Any:  # noqa: N802 - MLlib name
        """User factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Needs an active SparkSession.

        Examples
        --------
        >>> model.userFactors.where("id = '196'").show()
        """
        return self._factors_df(self.users)

    @property
    def itemFactors(self) -> Any:  # noqa: N802 - MLlib name
        """Item factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Examples
        --------
        >>> model.itemFactors.orderBy("count", ascending=False).limit(5).show()
        """
        return self._factors_df(self.items)

    def _factors_df(self, side: SideFactors, spark: Any = None) -> Any:
        table = side.to_arrow().select([C.ID, C.VEC, C.BIAS, C.COUNT])
        return (spark or _active_spark()).createDataFrame(table).select(C.ID, C.VEC, C.BIAS, C.COUNT)

    def _transform_spark(self, df: Any, strategy: str) -> Any:
        """Join each row with its factors and score the pairs in Python workers with :meth:`_score_rows`'
        definition (:func:`dsgd.core.scoring.score_pairs`), so Spark and pandas inputs agree exactly."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, StructField, StructType

        ucol, icol = self.params["user_col"], self.params["item_col"]
        missing = [c for c in (ucol, icol) if c not in df.columns]
        if missing:
            raise ValueError(f"transform: the DataFrame lacks column(s) {', '.join(missing)}")
        types = dict(df.dtypes)
        # the input's own session: tuning fits and transforms in threads, where no session is "active"
        spark = df.sparkSession
        uf = self._factors_df(self.users, spark).select(F.col(C.ID).alias("__u"), F.col(C.VEC).alias("__uv"),
                                                        F.col(C.BIAS).alias("__ub"))
        itf = self._factors_df(self.items, spark).select(F.col(C.ID).alias("__i"), F.col(C.VEC).alias("__iv"),
                                                         F.col(C.BIAS).alias("__ib"))
        how = "inner" if strategy == "drop" else "left"
        j = (df.withColumn("__uk", _spark_id(df, ucol, types)).withColumn("__ik", _spark_id(df, icol, types))
             .join(F.broadcast(uf), F.col("__uk") == F.col("__u"), how)
             .join(F.broadcast(itf), F.col("__ik") == F.col("__i"), how))
        schema = StructType([*df.schema.fields, StructField(PREDICTION, DoubleType())])
        return j.mapInArrow(_PairScorer(self.rank, self._biases(), self._mu(), list(df.columns)), schema)


class _PairScorer:
    """``mapInArrow`` function of :meth:`DSGDModel.transform` on Spark: the input rows plus a prediction,
    NaN where the user or the item has no factors."""

    def __init__(self, rank: int, biases: bool, mu: float, columns: list[str]) -> None:
        self.rank, self.biases, self.mu, self.columns = rank, biases, mu, columns

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rb in batches:
            t = pa.Table.from_batches([rb])
            pred = np.full(t.num_rows, np.nan)
            ok = ~np.asarray(t.column("__u").is_null().to_numpy(zero_copy_only=False) |
                             t.column("__i").is_null().to_numpy(zero_copy_only=False), bool)
            if ok.any():
                sub = t.filter(pa.array(ok))
                uv, iv = list_matrix(sub.column("__uv"), self.rank), list_matrix(sub.column("__iv"), self.rank)
                ub = np.asarray(sub.column("__ub").to_numpy(zero_copy_only=False), np.float32) if self.biases else None
                ib = np.asarray(sub.column("__ib").to_numpy(zero_copy_only=False), np.float32) if self.biases else None
                pred[ok] = score_pairs(uv, iv, user_bias=ub, item_bias=ib, mu=self.mu)
            out = t.select(self.columns).append_column(PREDICTION, pa.array(pred, pa.float64()))
            yield from out.to_batches()
