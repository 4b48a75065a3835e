"""Top-K recommendations of a :class:`~dsgd.api.DSGDModel` (mixed into it): known users by score, cold
users by popularity, seen items filtered, ties by item id."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dsgd.api.inputs import _ids_to_str, _is_spark_df
from dsgd.core import columns as C
from dsgd.core.blend import events_ptr
from dsgd.core.foldin_rule import FoldInRule, fold_users, item_gram_blas
from dsgd.core.scoring import score_matrix, top_k


class Recommender:
    """The recommendation methods of :class:`~dsgd.api.DSGDModel`."""

    def recommend(self, users: Any, k: int = 10, *, exclude_seen: bool = True, seen: Any = None,
                  chunk: int = 2048, events: Any = None, foldin: FoldInRule | None = None) -> pd.DataFrame:
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
        events : pandas or Spark DataFrame with the user and item columns (rating column optional), optional
            Recent events of some of the requested users, oldest first (by ``time_col`` when present): each
            such user is folded in from them against the fixed item factors before scoring
            (:func:`dsgd.core.foldin_rule.fold_users`, the rule ``dsgd serve`` applies): a known user
            starts from their vector, a new one from zeros once they have ``foldin.new_user_min_events``
            events (before that: popularity). Events on items the model lacks are ignored; with
            ``exclude_seen`` the events' items are excluded too.
        foldin : FoldInRule, optional
            Default: :meth:`FoldInRule.for_model` of this model's kind and biases (the measured defaults).

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
        seen_u, seen_i = self._seen_rows(req, seen) if exclude_seen else (np.zeros(0, np.int64),) * 2
        urows = self._user_index.get_indexer(req.to_numpy(object))
        vecs, bias, has = self._start_vectors(urows)
        if events is not None:
            ev_u, ev_i = self._fold_events(req, events, vecs, bias, has, foldin)
            if exclude_seen and len(ev_u):
                order = np.argsort(np.concatenate([seen_u, ev_u]), kind="stable")
                seen_u, seen_i = np.concatenate([seen_u, ev_u])[order], np.concatenate([seen_i, ev_i])[order]
        pop = self.item_popularity().astype(np.float64)
        out_u: list[str] = []
        out_rank: list[int] = []
        out_i: list[str] = []
        out_s: list[float] = []
        for lo in range(0, len(req), chunk):
            hi = min(lo + chunk, len(req))
            known = has[lo:hi]
            scores = np.broadcast_to(pop, (hi - lo, len(self.items))).copy()
            if known.any():
                b = self._biases()
                scores[known] = score_matrix(vecs[lo:hi][known], self.items.vec,
                                             user_bias=bias[lo:hi][known] if b else None,
                                             item_bias=self.items.bias if b else None, mu=self._mu())
            a, b = np.searchsorted(seen_u, lo), np.searchsorted(seen_u, hi)
            scores[seen_u[a:b] - lo, seen_i[a:b]] = -np.inf
            for row in range(hi - lo):
                best = top_k(scores[row], int(k))  # items are sorted by id: ties go to the smaller id
                out_u.extend([req[lo + row]] * len(best))
                out_rank.extend(range(1, len(best) + 1))
                out_i.extend(self.items.ids[best].tolist())
                out_s.extend(scores[row][best].tolist())
        return pd.DataFrame({"user": pd.Series(out_u, dtype=object), "rank": np.asarray(out_rank, np.int64),
                             "item": pd.Series(out_i, dtype=object), "score": np.asarray(out_s, np.float64)})

    def _start_vectors(self, urows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors, biases, known) of the requested users: the model's rows, zeros for unknown users."""
        has = urows >= 0
        vecs = np.zeros((len(urows), self.rank), np.float32)
        bias = np.zeros(len(urows), np.float32)
        vecs[has], bias[has] = self.users.vec[urows[has]], self.users.bias[urows[has]]
        return vecs, bias, has

    def _fold_events(self, req: pd.Index, events: Any, vecs: np.ndarray, bias: np.ndarray, has: np.ndarray,
                     rule: FoldInRule | None) -> tuple[np.ndarray, np.ndarray]:
        """Fold the requested users who have ``events`` in (``vecs``/``bias``/``has`` updated in place);
        returns their (request row, item row) pairs."""
        ucol, icol, rcol, tcol = (self.params[c] for c in ("user_col", "item_col", "rating_col", "time_col"))
        ev = events.toPandas() if _is_spark_df(events) else events
        if not isinstance(ev, pd.DataFrame) or ucol not in ev.columns or icol not in ev.columns:
            raise ValueError(f"recommend: events must be a pandas or Spark DataFrame with columns {ucol!r} and {icol!r}")
        if tcol in ev.columns:
            ev = ev.sort_values(tcol, kind="stable")
        r = req.get_indexer(_ids_to_str(ev[ucol], ucol).to_numpy(object))
        it = self._item_index.get_indexer(_ids_to_str(ev[icol], icol).to_numpy(object))
        ok = (r >= 0) & (it >= 0)
        rat = ev[rcol].to_numpy(np.float32)[ok] if rcol in ev.columns and self.kind == "explicit" else None
        order = np.argsort(r[ok], kind="stable")
        r, it = r[ok][order], it[ok][order]
        rat = None if rat is None else rat[order]
        if rule is None:
            rule = FoldInRule.for_model(kind=self.kind, use_bias=self._biases(), mu=self._mu())
        ptr = events_ptr(np.bincount(r, minlength=len(req)))
        gram = None
        if rule.online.method == "ls" and rule.online.implicit:
            gram = item_gram_blas(self.items.vec)
        v, b, folded = fold_users(self.items.vec, self.items.bias if self._biases() else None, vecs, bias, has, ptr,
                                  it, rat, params=rule.online, new_user_min_events=rule.new_user_min_events, gram=gram)
        vecs[folded], bias[folded] = v[folded], b[folded]
        has |= folded
        return r, it

    def _seen_rows(self, req: pd.Index, seen: Any) -> tuple[np.ndarray, np.ndarray]:
        """(request row, item row) of every seen pair of the requested users, sorted by request row."""
        s = self._seen if seen is None else self._seen_frame(seen)
        r = req.get_indexer(s[C.USER].to_numpy(object))
        it = self._item_index.get_indexer(s[C.ITEM].to_numpy(object))
        ok = (r >= 0) & (it >= 0)
        r, it = r[ok].astype(np.int64), it[ok].astype(np.int64)
        order = np.argsort(r, kind="stable")
        return r[order], it[order]

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

