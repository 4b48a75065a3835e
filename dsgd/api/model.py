"""A trained factor model: scores, recommendations, evaluation, incremental training and persistence."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsgd.api.inputs import (
    _active_spark,
    _distinct_pairs,
    _ids_and_keys,
    _ids_to_str,
    _is_spark_df,
    _json_default,
    _normalise_pandas_types,
    _spark_id,
)
from dsgd.core import columns as C
from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.core.params import KernelParams
from dsgd.core.schedules import Schedule
from dsgd.engines.local import train_epochs

log = logging.getLogger(__name__)

COLD_START_STRATEGIES = ("nan", "drop")
PREDICTION = "prediction"
_FORMAT_VERSION = 1


class DSGDModel:
    """A trained factor model. Rows of every side array are sorted by id.

    Attributes
    ----------
    rank : int
    kind : str
        ``"explicit"`` or ``"implicit"``.
    mu : float
        Global mean rating (explicit; 0.0 for implicit).
    params : dict
        The estimator's parameters (:meth:`DSGD.get_params`).
    engine : str
        The engine ``fit`` ran on.
    history : list of dict
        Per-epoch stats of ``fit``: ``epoch``, ``lr``, ``loss``, ``updates``, ``seconds``.
    user_ids, item_ids : numpy object arrays of str
    user_vecs, item_vecs : float32 [n, rank]
    user_bias, item_bias : float32 [n]
    user_count, item_count : int64 [n]
        SGD updates per id as the engine counts them (events x epochs; they feed popularity-weighted
        negative sampling). Cold-user popularity is :meth:`item_popularity` instead.
    """

    def __init__(self, *, params: dict[str, Any], mu: float, engine: str,
                 users: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 items: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 history: list[dict] | None = None, seen: pd.DataFrame | None = None) -> None:
        self.params = dict(params)
        self.rank = int(params["rank"])
        self.kind = str(params["kind"])
        self.mu = float(mu)
        self.engine = engine
        self.history: list[dict] = list(history or [])
        self._set_side("u", users)
        self._set_side("i", items)
        self._set_seen(seen if seen is not None else pd.DataFrame({C.USER: [], C.ITEM: []}, dtype=object))

    @classmethod
    def _empty(cls, est: Any, *, mu: float, engine: str) -> DSGDModel:
        r = est.rank
        empty = (np.zeros(0, object), np.zeros((0, r), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return cls(params=est.get_params(), mu=mu, engine=engine, users=empty, items=empty)

    def _set_side(self, side: str, rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        ids, vec, bias, count = rows
        ids = np.asarray(ids, dtype=object)
        order = np.argsort(ids.astype(str), kind="stable") if len(ids) else np.zeros(0, np.int64)
        ids = ids[order]
        vec = np.ascontiguousarray(np.asarray(vec, np.float32).reshape(len(ids), self.rank)[order]) \
            if len(ids) else np.zeros((0, self.rank), np.float32)
        bias = np.ascontiguousarray(np.asarray(bias, np.float32)[order])
        count = np.ascontiguousarray(np.asarray(count, np.int64)[order])
        if side == "u":
            self.user_ids, self.user_vecs, self.user_bias, self.user_count = ids, vec, bias, count
            self._user_index = pd.Index(ids)
        else:
            self.item_ids, self.item_vecs, self.item_bias, self.item_count = ids, vec, bias, count
            self._item_index = pd.Index(ids)
            self._popularity: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"DSGDModel(kind={self.kind!r}, rank={self.rank}, users={len(self.user_ids)}, "
                f"items={len(self.item_ids)}, mu={self.mu:.4f}, engine={self.engine!r})")

    def _set_seen(self, seen: pd.DataFrame) -> None:
        self._seen = seen
        self._popularity = None

    @property
    def seen(self) -> pd.DataFrame:
        """The distinct training ``(user, item)`` pairs (fit plus partial_fit) used by :meth:`recommend`."""
        return self._seen

    # ------------------------------------------------------------------ Spark views

    @property
    def userFactors(self) -> Any:  # noqa: N802 - MLlib name
        """User factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Needs an active SparkSession.

        Examples
        --------
        >>> model.userFactors.where("id = '196'").show()
        """
        return self._factors_df(self.user_ids, self.user_vecs, self.user_bias, self.user_count)

    @property
    def itemFactors(self) -> Any:  # noqa: N802 - MLlib name
        """Item factors as a Spark DataFrame ``id string, vec array<float>, bias float, count long``.

        Examples
        --------
        >>> model.itemFactors.orderBy("count", ascending=False).limit(5).show()
        """
        return self._factors_df(self.item_ids, self.item_vecs, self.item_bias, self.item_count)

    def _factors_df(self, ids: np.ndarray, vec: np.ndarray, bias: np.ndarray, count: np.ndarray) -> Any:
        import pyarrow as pa

        spark = _active_spark()
        n = len(ids)
        offsets = pa.array(np.arange(0, (n + 1) * self.rank, self.rank, dtype=np.int32))
        table = pa.table({C.ID: pa.array(ids.tolist(), pa.string()),
                          C.VEC: pa.ListArray.from_arrays(offsets, pa.array(vec.reshape(-1), pa.float32())),
                          C.BIAS: pa.array(bias, pa.float32()), C.COUNT: pa.array(count, pa.int64())})
        return spark.createDataFrame(table.to_pandas(),
                                     schema=f"{C.ID} string, {C.VEC} array<float>, {C.BIAS} float, {C.COUNT} long")

    # ------------------------------------------------------------------ scoring

    def _rows(self, ids: Any, side: str) -> np.ndarray:
        index = self._user_index if side == "u" else self._item_index
        keys = _ids_to_str(pd.Series(np.asarray(ids, dtype=object) if not isinstance(ids, pd.Series) else ids),
                           "users" if side == "u" else "items")
        return index.get_indexer(keys.to_numpy(object))

    def _score_rows(self, ur: np.ndarray, ir: np.ndarray) -> np.ndarray:
        """float64 predictions for known rows (no -1 allowed)."""
        dot = np.einsum("ij,ij->i", self.user_vecs[ur].astype(np.float64), self.item_vecs[ir].astype(np.float64))
        if self.params["use_bias"]:
            dot += self.user_bias[ur].astype(np.float64) + self.item_bias[ir].astype(np.float64)
        return dot + (self.mu if self.kind == "explicit" else 0.0)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Scores of aligned ``(user, item)`` pairs; NaN where the user or the item is unknown.

        Explicit: ``mu + b_u + b_i + p_u.q_i``. Implicit: ``p_u.q_i`` (plus ``b_u + b_i`` when the
        model learnt biases). Computed in float64 from the float32 factors.

        Parameters
        ----------
        users, items : array-like of ids (int or str), same length

        Examples
        --------
        >>> model.predict(["196", "186"], [242, 302])
        array([3.9..., 3.5...])
        """
        ur, ir = self._rows(users, "u"), self._rows(items, "i")
        if ur.shape != ir.shape:
            raise ValueError(f"predict: users and items must have the same length, got {ur.shape[0]} and "
                             f"{ir.shape[0]}")
        out = np.full(ur.shape[0], np.nan, np.float64)
        ok = (ur >= 0) & (ir >= 0)
        out[ok] = self._score_rows(ur[ok], ir[ok])
        return out

    def transform(self, df: Any, *, cold_start_strategy: str | None = None) -> Any:
        """``df`` with a ``prediction`` (double) column, computed from its user and item columns.

        Parameters
        ----------
        df : pyspark.sql.DataFrame or pandas.DataFrame
            Needs the estimator's ``user_col`` and ``item_col`` (int or string ids).
        cold_start_strategy : str, optional
            ``"nan"`` (unknown user or item: NaN) or ``"drop"`` (remove those rows); defaults to the
            estimator's ``cold_start_strategy``.

        Examples
        --------
        >>> model.transform(test_sdf).select("user", "item", "rating", "prediction").show(3)
        """
        strategy = cold_start_strategy or self.params.get("cold_start_strategy", "nan")
        if strategy not in COLD_START_STRATEGIES:
            raise ValueError(f"transform: cold_start_strategy={strategy!r} is not supported; allowed values: "
                             f"{', '.join(repr(s) for s in COLD_START_STRATEGIES)}")
        ucol, icol = self.params["user_col"], self.params["item_col"]
        if isinstance(df, pd.DataFrame):
            missing = [c for c in (ucol, icol) if c not in df.columns]
            if missing:
                raise ValueError(f"transform: the DataFrame lacks column(s) {', '.join(missing)}")
            out = df.copy()
            out[PREDICTION] = self.predict(df[ucol], df[icol])
            return out[out[PREDICTION].notna()].copy() if strategy == "drop" else out
        if not _is_spark_df(df):
            raise ValueError(f"transform: df must be a pyspark.sql.DataFrame or pandas.DataFrame, got "
                             f"{type(df).__name__}")
        return self._transform_spark(df, strategy)

    def _transform_spark(self, df: Any, strategy: str) -> Any:
        from pyspark.sql import functions as F

        ucol, icol = self.params["user_col"], self.params["item_col"]
        missing = [c for c in (ucol, icol) if c not in df.columns]
        if missing:
            raise ValueError(f"transform: the DataFrame lacks column(s) {', '.join(missing)}")
        types = dict(df.dtypes)
        uf = self.userFactors.select(F.col(C.ID).alias("__u"), F.col(C.VEC).alias("__uv"),
                                     F.col(C.BIAS).alias("__ub"))
        itf = self.itemFactors.select(F.col(C.ID).alias("__i"), F.col(C.VEC).alias("__iv"),
                                      F.col(C.BIAS).alias("__ib"))
        how = "inner" if strategy == "drop" else "left"
        j = (df.withColumn("__uk", _spark_id(df, ucol, types)).withColumn("__ik", _spark_id(df, icol, types))
             .join(F.broadcast(uf), F.col("__uk") == F.col("__u"), how)
             .join(F.broadcast(itf), F.col("__ik") == F.col("__i"), how))
        dot = F.aggregate(F.zip_with("__uv", "__iv", lambda x, y: x.cast("double") * y.cast("double")),
                          F.lit(0.0).cast("double"), lambda acc, x: acc + x)
        pred = dot
        if self.params["use_bias"]:
            pred = pred + F.col("__ub").cast("double") + F.col("__ib").cast("double")
        if self.kind == "explicit":
            pred = pred + F.lit(self.mu)
        pred = F.when(F.col("__u").isNull() | F.col("__i").isNull(), F.lit(float("nan"))).otherwise(pred)
        return j.withColumn(PREDICTION, pred).select(*df.columns, PREDICTION)

    # ------------------------------------------------------------------ evaluation

    def _eval_pairs(self, df: Any) -> tuple[np.ndarray, np.ndarray]:
        ucol, icol, rcol = self.params["user_col"], self.params["item_col"], self.params["rating_col"]
        if _is_spark_df(df):
            df = df.select(ucol, icol, rcol).toPandas()
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"df must be a pandas or Spark DataFrame, got {type(df).__name__}")
        if rcol not in df.columns:
            raise ValueError(f"the DataFrame lacks the rating column {rcol!r}")
        pred = self.predict(df[ucol], df[icol])
        actual = df[rcol].to_numpy(np.float64)
        ok = ~np.isnan(pred)
        return pred[ok], actual[ok]

    def rmse(self, df: Any) -> float:
        """Root mean squared error of :meth:`predict` on ``df``'s ratings, over rows whose user and item
        are known (cold rows are dropped, like MLlib's ``coldStartStrategy="drop"``).

        Examples
        --------
        >>> model.rmse(test_pdf)
        0.93...
        """
        from dsgd.core.metrics import rmse

        return rmse(*self._eval_pairs(df))

    def mae(self, df: Any) -> float:
        """Mean absolute error of :meth:`predict` on ``df``'s ratings (cold rows dropped).

        Examples
        --------
        >>> model.mae(test_pdf)
        0.73...
        """
        from dsgd.core.metrics import mae

        return mae(*self._eval_pairs(df))

    # ------------------------------------------------------------------ recommendation

    def recommend(self, users: Any, k: int = 10, *, exclude_seen: bool = True, seen: Any = None,
                  chunk: int = 2048) -> pd.DataFrame:
        """Top-``k`` items per user, best first.

        Parameters
        ----------
        users : array-like of ids
            Duplicates are answered once, in first-appearance order.
        k : int, default 10
            List length (>= 1); a list is shorter when fewer candidate items remain.
        exclude_seen : bool, default True
            Remove each user's seen items from the candidates.
        seen : pandas or Spark DataFrame with the user and item columns, optional
            The interactions to exclude; default: the training interactions (:attr:`seen`).
        chunk : int
            Users scored at once (memory is ``chunk * n_items`` floats); the result does not depend on it.

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``rank`` (1-based), ``item``, ``score``, sorted by request order then rank.
            Known users are scored by :meth:`predict`; unknown (cold) users get the most popular items
            (:meth:`item_popularity`, ties by item id) with that count as ``score``, seen items still filtered.
            Ties between scores are broken by item id.

        Examples
        --------
        >>> model.recommend(["196", "new-user"], k=3)
               user  rank item     score
        0       196     1  408  4.61...
        ...
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"recommend: k must be an int >= 1, got {k!r}")
        if chunk < 1:
            raise ValueError(f"recommend: chunk must be >= 1, got {chunk!r}")
        req = pd.Index(_ids_to_str(pd.Series(np.asarray(users, dtype=object)), "users").to_numpy(object)).unique()
        n_items = len(self.item_ids)
        k = int(min(k, n_items))
        seen_rows: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if exclude_seen:
            s = self._seen if seen is None else self._seen_frame(seen)
            r = req.get_indexer(s[C.USER].to_numpy(object))
            it = self._item_index.get_indexer(s[C.ITEM].to_numpy(object))
            ok = (r >= 0) & (it >= 0)
            seen_rows = (r[ok].astype(np.int64), it[ok].astype(np.int64))
        urows = self._user_index.get_indexer(req.to_numpy(object))
        pop = self.item_popularity().astype(np.float64)
        out_u, out_rank, out_i, out_s = [], [], [], []
        order_pos = np.argsort(seen_rows[0], kind="stable")
        sr_u, sr_i = seen_rows[0][order_pos], seen_rows[1][order_pos]
        for lo in range(0, len(req), chunk):
            hi = min(lo + chunk, len(req))
            ur = urows[lo:hi]
            known = ur >= 0
            scores = np.broadcast_to(pop, (hi - lo, n_items)).copy()
            if known.any():
                scores[known] = self._score_matrix(ur[known])
            a, b = np.searchsorted(sr_u, lo), np.searchsorted(sr_u, hi)
            scores[sr_u[a:b] - lo, sr_i[a:b]] = -np.inf
            for row in range(hi - lo):
                if k == 0:
                    break
                sc = scores[row]
                cand = np.argpartition(-sc, k - 1)[:k] if k < n_items else np.arange(n_items)
                # exact top-k with ties by item id: take everything scoring >= the k-th best
                kth = sc[cand].min()
                cand = np.flatnonzero(sc >= kth)
                cand = cand[np.lexsort((cand, -sc[cand]))][:k]
                cand = cand[np.isfinite(sc[cand])]
                out_u.extend([req[lo + row]] * len(cand))
                out_rank.extend(range(1, len(cand) + 1))
                out_i.extend(self.item_ids[cand].tolist())
                out_s.extend(sc[cand].tolist())
        return pd.DataFrame({"user": pd.Series(out_u, dtype=object), "rank": np.asarray(out_rank, np.int64),
                             "item": pd.Series(out_i, dtype=object), "score": np.asarray(out_s, np.float64)})

    def _score_matrix(self, ur: np.ndarray) -> np.ndarray:
        s = self.user_vecs[ur].astype(np.float64) @ self.item_vecs.astype(np.float64).T
        if self.params["use_bias"]:
            s += self.user_bias[ur].astype(np.float64)[:, None] + self.item_bias.astype(np.float64)[None, :]
        if self.kind == "explicit":
            s += self.mu
        return s

    def _seen_frame(self, seen: Any) -> pd.DataFrame:
        ucol, icol = self.params["user_col"], self.params["item_col"]
        if _is_spark_df(seen):
            seen = seen.select(ucol, icol).toPandas()
        if not isinstance(seen, pd.DataFrame) or ucol not in seen.columns or icol not in seen.columns:
            raise ValueError(f"recommend: seen must be a pandas or Spark DataFrame with columns {ucol!r} and "
                             f"{icol!r}")
        return pd.DataFrame({C.USER: _ids_to_str(seen[ucol], ucol), C.ITEM: _ids_to_str(seen[icol], icol)})

    def item_popularity(self) -> np.ndarray:
        """Distinct training users per item (aligned with :attr:`item_ids`): the cold-user fallback order.

        (``item_count`` counts SGD updates, which grow with ``epochs``; this does not.)

        Examples
        --------
        >>> model.item_ids[np.argsort(-model.item_popularity(), kind="stable")[:3]]
        """
        if self._popularity is None:
            rows = self._item_index.get_indexer(self._seen[C.ITEM].to_numpy(object))
            self._popularity = np.bincount(rows[rows >= 0], minlength=len(self.item_ids)).astype(np.int64)
        return self._popularity

    def recommend_for_all(self, k: int = 10, *, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for every known user (see :meth:`recommend`).

        Examples
        --------
        >>> model.recommend_for_all(10).head()
          user  rank  item     score
        """
        return self.recommend(self.user_ids, k, exclude_seen=exclude_seen)

    # ------------------------------------------------------------------ incremental training

    def _train_local(self, ev: pd.DataFrame, *, batch_id: int, epochs: int, schedule: Schedule) -> list[dict]:
        p = self.params
        users = self._side_factors("u")
        items = self._side_factors("i")
        u_ids, u_keys = _ids_and_keys(ev[C.USER])
        i_ids, i_keys = _ids_and_keys(ev[C.ITEM])
        est_params = KernelParams(lr=p["lr"], reg=p["reg"], mu=self.mu if self.kind == "explicit" else 0.0,
                                  implicit=self.kind == "implicit", use_bias=p["use_bias"],
                                  negatives=p["negatives"] if self.kind == "implicit" else 0,
                                  negative_sampling=p["negative_sampling"])
        stats = train_epochs(users, items, u_keys, i_keys, u_ids, i_ids, ev[C.RATING].to_numpy(np.float32),
                             ev[C.TS].to_numpy(np.int64), ev[C.SEQ].to_numpy(np.int64), est_params,
                             d=p["blocks"], epochs=epochs, schedule=schedule, strata_order=p["strata_order"],
                             seed=p["seed"], batch_id=batch_id, init_scale=p["init_scale"], rank=self.rank,
                             threads=2)
        self._set_side("u", (users.ids, users.vec, users.bias, users.count))
        self._set_side("i", (items.ids, items.vec, items.bias, items.count))
        return stats

    def _side_factors(self, side: str) -> SideFactors:
        ids, vec, bias, count = ((self.user_ids, self.user_vecs, self.user_bias, self.user_count) if side == "u"
                                 else (self.item_ids, self.item_vecs, self.item_bias, self.item_count))
        return SideFactors(id_key(ids) if len(ids) else np.zeros(0, np.int64), ids.copy(), vec.copy(),
                           bias.copy(), count.copy())

    def partial_fit(self, events: Any, *, batch_id: int, epochs: int | None = None,
                    schedule: Schedule | None = None) -> list[dict]:
        """Train on more events starting from the current factors (local engine, in place).

        New ids get their deterministic initial vectors; ``mu`` is kept. Seeds derive from
        ``(seed, batch_id)`` exactly as in :func:`dsgd.engines.local.train_epochs`, so replaying a batch with the
        same ``batch_id`` on the same model gives the same factors.

        Parameters
        ----------
        events : pandas or Spark DataFrame
            Same columns as for :meth:`DSGD.fit`.
        batch_id : int
            Identifies the batch (>= 0); ``fit`` used 0.
        epochs : int, optional
            Epochs over these events; default: the estimator's ``epochs``.
        schedule : Schedule, optional
            Learning-rate schedule to use (and update); default: a fresh one from ``lr``/``lr_schedule``.

        Returns
        -------
        list of dict
            Per-epoch stats (also appended to :attr:`history` with a ``batch_id`` key).

        Examples
        --------
        >>> stats = model.partial_fit(new_events_pdf, batch_id=1, epochs=1)
        >>> stats[0]["updates"]
        1000
        """
        if isinstance(batch_id, bool) or not isinstance(batch_id, int | np.integer) or batch_id < 0:
            raise ValueError(f"partial_fit: batch_id must be an int >= 0, got {batch_id!r}")
        epochs = self.params["epochs"] if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"partial_fit: epochs must be an int >= 1, got {epochs!r}")
        est = self.estimator()
        if _is_spark_df(events):
            ev = _normalise_pandas_types(est._prepare_spark(events).toPandas())
        elif isinstance(events, pd.DataFrame):
            ev = est._prepare_pandas(events)
        else:
            raise ValueError(f"partial_fit: events must be a pandas or Spark DataFrame, got {type(events).__name__}")
        if len(ev) == 0:
            return []
        sched = schedule if schedule is not None else est.make_schedule()
        stats = self._train_local(ev, batch_id=int(batch_id), epochs=int(epochs), schedule=sched)
        self.history.extend({**s, "batch_id": int(batch_id)} for s in stats)
        self._set_seen(_distinct_pairs(pd.concat([self._seen, ev[[C.USER, C.ITEM]]], ignore_index=True)))
        return stats

    def estimator(self) -> Any:
        """A :class:`DSGD` with this model's parameters.

        Examples
        --------
        >>> model.estimator().rank == model.rank
        True
        """
        from dsgd.api.estimator import DSGD

        p = dict(self.params)
        if p["kind"] == "explicit":
            p["use_bias"] = None
        return DSGD(**p)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the model to a folder: ``model.json`` (params, mu, history), ``users.parquet``,
        ``items.parquet`` (id, vec, bias, count) and ``seen.parquet``. Overwrites existing files.

        Examples
        --------
        >>> model.save("/tmp/m1"); DSGDModel.load("/tmp/m1").rank
        10
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": _FORMAT_VERSION, "params": self.params, "mu": self.mu, "engine": self.engine,
                "history": self.history}
        for side, (ids, vec, bias, count) in (
                ("users", (self.user_ids, self.user_vecs, self.user_bias, self.user_count)),
                ("items", (self.item_ids, self.item_vecs, self.item_bias, self.item_count))):
            n = len(ids)
            offsets = pa.array(np.arange(0, (n + 1) * self.rank, self.rank, dtype=np.int32))
            pq.write_table(pa.table({C.ID: pa.array(ids.tolist(), pa.string()),
                                     C.VEC: pa.ListArray.from_arrays(offsets, pa.array(vec.reshape(-1), pa.float32())),
                                     C.BIAS: pa.array(bias, pa.float32()), C.COUNT: pa.array(count, pa.int64())}),
                           folder / f"{side}.parquet")
        pq.write_table(pa.table({C.USER: pa.array(self._seen[C.USER].tolist(), pa.string()),
                                 C.ITEM: pa.array(self._seen[C.ITEM].tolist(), pa.string())}),
                       folder / "seen.parquet")
        (folder / "model.json").write_text(json.dumps(meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, path: str | Path) -> DSGDModel:
        """Read a model written by :meth:`save`.

        Examples
        --------
        >>> model = DSGDModel.load("/tmp/m1")
        """
        import pyarrow.parquet as pq

        folder = Path(path)
        if not (folder / "model.json").is_file():
            raise FileNotFoundError(f"DSGDModel.load: {folder} holds no model.json (not a saved DSGDModel)")
        meta = json.loads((folder / "model.json").read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"DSGDModel.load: unsupported format_version {meta.get('format_version')!r}")
        rank = int(meta["params"]["rank"])
        sides = []
        for side in ("users", "items"):
            t = pq.read_table(folder / f"{side}.parquet")
            n = t.num_rows
            vec = t.column(C.VEC).combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            sides.append((np.asarray(t.column(C.ID).to_pylist(), dtype=object), vec.reshape(n, rank),
                          t.column(C.BIAS).to_numpy().astype(np.float32), t.column(C.COUNT).to_numpy().astype(np.int64)))
        seen = pq.read_table(folder / "seen.parquet").to_pandas().astype(object)
        return cls(params=meta["params"], mu=meta["mu"], engine=meta["engine"], users=sides[0], items=sides[1],
                   history=meta["history"], seen=seen)


