"""What a retrain or a rollback changed in the live model: factor rows changed, one user's top-k before
and after, and how the last batches scored, so ``dsgd retrain`` and ``dsgd rollback`` say it instead of
leaving the user to run ``dsgd recommend`` twice.

Example
-------
>>> model_changes(spark, cfg, before=12, after=13)
{'versions': [12, 13], 'rows_changed': {'u': 610, 'i': 9724}, 'user': 'u414', 'top_k_before': [...],
 'top_k_after': [...], 'top_k_kept': 2, 'last_batches': {'batches': 5, 'dcg': 0.31, 'dcg_popularity': 0.25}}
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.config import Config
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

log = logging.getLogger("dsgd.serving")

#: Batches of the ``metrics`` table the report averages.
LAST_BATCHES = 5


def rows_changed(store: FactorStore, before: int, after: int) -> dict[str, int]:
    """Factor rows per side that differ (vector, bias or presence) between two versions."""
    cols = [C.SIDE, C.ID, C.VEC, C.BIAS]
    a = store.current(before).where(F.col(C.SIDE) != C.SIDE_META).select(*cols)
    b = store.current(after).where(F.col(C.SIDE) != C.SIDE_META).select(*cols)
    joined = a.alias("a").join(b.alias("b"), [C.SIDE, C.ID], "full_outer")
    differs = ~(F.col(f"a.{C.VEC}").eqNullSafe(F.col(f"b.{C.VEC}"))
                & F.col(f"a.{C.BIAS}").eqNullSafe(F.col(f"b.{C.BIAS}")))
    counts = joined.where(differs).groupBy(C.SIDE).count().collect()
    out = {C.SIDE_USER: 0, C.SIDE_ITEM: 0}
    out.update({r[C.SIDE]: int(r["count"]) for r in counts})
    return out


def most_active_user(store: FactorStore, version: int) -> str | None:
    row = (store.current(version).where(F.col(C.SIDE) == C.SIDE_USER).orderBy(F.col(C.COUNT).desc(), F.col(C.ID))
           .select(C.ID).first())
    return None if row is None else str(row[0])


def last_batches(spark: SparkSession, cfg: Config, n: int = LAST_BATCHES) -> dict[str, Any] | None:
    """Mean prequential DCG and popularity DCG of the stream's last ``n`` evaluated batches."""
    from delta.tables import DeltaTable

    path = Tables.from_config(cfg).metrics
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    rows = (spark.read.format("delta").load(path).where(F.col("dcg_events") > 0)
            .orderBy(F.col("written_at").desc()).limit(n).select("dcg", "dcg_popularity").collect())
    if not rows:
        return None
    return {"batches": len(rows), "dcg": round(sum(r[0] for r in rows) / len(rows), 4),
            "dcg_popularity": round(sum(r[1] for r in rows) / len(rows), 4)}


def model_changes(spark: SparkSession, cfg: Config, *, before: int, after: int, user: str | None = None,
                  k: int = 10) -> dict[str, Any]:
    """Rows changed between the ``factors`` versions ``before`` and ``after``, ``user``'s (default: the
    most active user's) top-``k`` at both, and the last batches' DCG; also logged as one line."""
    from batch.serving import recommend

    store = FactorStore(spark, Tables.from_config(cfg).factors)
    out: dict[str, Any] = {"versions": [before, after], "rows_changed": rows_changed(store, before, after)}
    user = user or most_active_user(store, after)
    if user is not None:
        top_before = [d["item"] for d in recommend(spark, cfg, user, k=k, version=before)["items"]]
        top_after = [d["item"] for d in recommend(spark, cfg, user, k=k, version=after)["items"]]
        out.update(user=user, top_k_before=top_before, top_k_after=top_after,
                   top_k_kept=len(set(top_before) & set(top_after)))
    out["last_batches"] = last_batches(spark, cfg)
    log.info("%s", describe(out, k))
    return out


def describe(ch: dict[str, Any], k: int = 10) -> str:
    """The change report as one readable line."""
    rc = ch["rows_changed"]
    text = (f"factors version {ch['versions'][0]} -> {ch['versions'][1]}: {rc.get('u', 0)} user and "
            f"{rc.get('i', 0)} item rows changed")
    if "user" in ch:
        text += (f"; top-{k} of {ch['user']} (most active unless given): {ch['top_k_kept']} of "
                 f"{len(ch['top_k_after'])} items kept")
    if ch.get("last_batches"):
        lb = ch["last_batches"]
        text += f"; last {lb['batches']} stream batches: dcg {lb['dcg']} vs popularity {lb['dcg_popularity']}"
    return text
