"""The rank column of a ``pyspark.ml`` transform: each row's item ranked among all items for its user.

The rank is the evaluation protocol's (docs/evaluation.md, :func:`dsgd.core.metrics.ranks_of_targets`):
``1 + number of items scoring strictly higher than the row's item``, every item a candidate (seen items
are not excluded), scores from :mod:`dsgd.core.scoring` as everywhere else. Rows whose user or item
the model does not know get a null rank.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dsgd.core.metrics import ranks_of_targets

#: Rows scored against all items at once (memory: ``CHUNK * n_items`` float64).
CHUNK = 1024


class _Ranker:
    """``mapInArrow`` function: the input rows plus the rank column."""

    def __init__(self, model: Any, rank_col: str) -> None:
        m = copy.copy(model)
        m._seen = pd.DataFrame()  # not needed in the workers: do not ship it
        self.model, self.rank_col = m, rank_col
        self.user_col, self.item_col = m.params["user_col"], m.params["item_col"]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rb in batches:
            t = pa.Table.from_batches([rb])
            users = pd.Series(t.column(self.user_col).to_pylist(), dtype=object)
            items = pd.Series(t.column(self.item_col).to_pylist(), dtype=object)
            ur, ir = self.model._rows(users, "u"), self.model._rows(items, "i")
            ok = (ur >= 0) & (ir >= 0)
            ranks = np.zeros(t.num_rows, np.int64)
            rows = np.flatnonzero(ok)
            for lo in range(0, rows.size, CHUNK):
                part = rows[lo:lo + CHUNK]
                ranks[part] = ranks_of_targets(self.model._score_matrix(ur[part]), ir[part])
            yield from t.append_column(self.rank_col, pa.array(ranks, pa.int64(), mask=~ok)).to_batches()


def rank_column(model: Any, df: Any, rank_col: str) -> Any:
    """``df`` (with the model's user and item columns) plus ``rank_col`` (long, null when not rankable)."""
    from pyspark.sql.types import LongType, StructField, StructType

    schema = StructType([*df.schema.fields, StructField(rank_col, LongType())])
    return df.mapInArrow(_Ranker(model, rank_col), schema)
