"""A trained factor model: scores, recommendations, evaluation and incremental training.

Its factors are two :class:`~dsgd.core.factors.SideFactors` (users, items), rows sorted by id; every
score comes from :mod:`dsgd.core.scoring`, the definition the server and the harness use too.
Persistence is in :mod:`dsgd.api.persistence`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsgd.api.inputs import (
    _distinct_pairs,
    _ids_and_keys,
    _ids_to_str,
    _is_spark_df,
    _normalise_pandas_types,
    prepare_pandas,
    prepare_spark,
)
from dsgd.api.params import COLD_START_STRATEGIES
from dsgd.api.recommend import Recommender
from dsgd.api.spark_views import PREDICTION, SparkViews
from dsgd.core import columns as C
from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.core.schedules import Schedule
from dsgd.core.scoring import score_matrix, score_pairs
from dsgd.engines.local import train_epochs

log = logging.getLogger(__name__)



def by_id(side: SideFactors) -> SideFactors:
    """``side`` with its rows sorted by id (the model's order; ties cannot occur, ids are unique)."""
    order = np.argsort(side.ids.astype(str), kind="stable") if len(side) else np.zeros(0, np.int64)
    return SideFactors(side.keys[order], side.ids[order], np.ascontiguousarray(side.vec[order]),
                       side.bias[order].copy(), side.count[order].copy())


def side_of(ids: Any, vec: Any, bias: Any, count: Any, rank: int) -> SideFactors:
    """A :class:`SideFactors` sorted by id from aligned arrays (keys derived from the ids)."""
    ids = np.asarray(ids, dtype=object)
    keys = id_key(ids) if len(ids) else np.zeros(0, np.int64)
    vec = np.asarray(vec, np.float32).reshape(len(ids), rank)
    return by_id(SideFactors(keys, ids, vec, np.asarray(bias, np.float32), np.asarray(count, np.int64)))


class DSGDModel(Recommender, SparkViews):
    """A trained factor model. Rows of every side are sorted by id.

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
    users, items : SideFactors
        The factors; ``user_ids``, ``user_vecs``, ``user_bias``, ``user_count`` (and the same for
        items) are views of them. Counts are SGD updates per id (events x epochs; they feed
        popularity-weighted negative sampling); cold-user popularity is :meth:`item_popularity`.
    """

    def __init__(self, *, params: dict[str, Any], mu: float, engine: str, users: SideFactors | tuple,
                 items: SideFactors | tuple, history: list[dict] | None = None,
                 seen: pd.DataFrame | None = None) -> None:
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
        return cls(params=est.get_params(), mu=mu, engine=engine, users=SideFactors.empty(est.rank),
                   items=SideFactors.empty(est.rank))

    def _set_side(self, side: str, rows: SideFactors | tuple) -> None:
        f = by_id(rows) if isinstance(rows, SideFactors) else side_of(*rows, rank=self.rank)
        if side == "u":
            self.users, self._user_index = f, pd.Index(f.ids)
        else:
            self.items, self._item_index = f, pd.Index(f.ids)
            self._popularity: np.ndarray | None = None

    user_ids = property(lambda self: self.users.ids)
    user_vecs = property(lambda self: self.users.vec)
    user_bias = property(lambda self: self.users.bias)
    user_count = property(lambda self: self.users.count)
    item_ids = property(lambda self: self.items.ids)
    item_vecs = property(lambda self: self.items.vec)
    item_bias = property(lambda self: self.items.bias)
    item_count = property(lambda self: self.items.count)

    def __repr__(self) -> str:
        return (f"DSGDModel(kind={self.kind!r}, rank={self.rank}, users={len(self.users)}, "
                f"items={len(self.items)}, mu={self.mu:.4f}, engine={self.engine!r})")

    def _set_seen(self, seen: pd.DataFrame) -> None:
        self._seen = seen
        self._popularity = None

    @property
    def seen(self) -> pd.DataFrame:
        """The distinct training ``(user, item)`` pairs (fit plus partial_fit) used by :meth:`recommend`."""
        return self._seen

    # ------------------------------------------------------------------ scoring

    def _biases(self) -> bool:
        return bool(self.params["use_bias"])

    def _rows(self, ids: Any, side: str) -> np.ndarray:
        index = self._user_index if side == "u" else self._item_index
        keys = _ids_to_str(pd.Series(np.asarray(ids, dtype=object) if not isinstance(ids, pd.Series) else ids),
                           "users" if side == "u" else "items")
        return index.get_indexer(keys.to_numpy(object))

    def _score_rows(self, ur: np.ndarray, ir: np.ndarray) -> np.ndarray:
        """float64 predictions for known rows (no -1 allowed)."""
        b = self._biases()
        return score_pairs(self.users.vec[ur], self.items.vec[ir], user_bias=self.users.bias[ur] if b else None,
                           item_bias=self.items.bias[ir] if b else None, mu=self._mu())

    def _mu(self) -> float:
        return self.mu if self.kind == "explicit" else 0.0

    def _score_matrix(self, ur: np.ndarray) -> np.ndarray:
        b = self._biases()
        return score_matrix(self.users.vec[ur], self.items.vec, user_bias=self.users.bias[ur] if b else None,
                            item_bias=self.items.bias if b else None, mu=self._mu())

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

    # ------------------------------------------------------------------ incremental training

    def _train_local(self, ev: pd.DataFrame, *, batch_id: int, epochs: int, schedule: Schedule) -> list[dict]:
        p = self.params
        users, items = self.users.copy(), self.items.copy()
        u_ids, u_keys = _ids_and_keys(ev[C.USER])
        i_ids, i_keys = _ids_and_keys(ev[C.ITEM])
        stats = train_epochs(users, items, u_keys, i_keys, u_ids, i_ids, ev[C.RATING].to_numpy(np.float32),
                             ev[C.TS].to_numpy(np.int64), ev[C.SEQ].to_numpy(np.int64),
                             self.estimator().kernel_params(self.mu), d=p["blocks"], epochs=epochs,
                             schedule=schedule, strata_order=p["strata_order"], seed=p["seed"], batch_id=batch_id,
                             init_scale=p["init_scale"], rank=self.rank, threads=2)
        self._set_side("u", users)
        self._set_side("i", items)
        return stats

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
            ev = _normalise_pandas_types(prepare_spark(est, events).toPandas())
        elif isinstance(events, pd.DataFrame):
            ev = prepare_pandas(est, events)
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
        from dsgd.api.persistence import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> DSGDModel:
        """Read a model written by :meth:`save`.

        Examples
        --------
        >>> model = DSGDModel.load("/tmp/m1")
        """
        from dsgd.api.persistence import load_model

        return load_model(cls, path)
