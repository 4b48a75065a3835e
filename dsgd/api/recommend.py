"""Top-K recommendations of a :class:`~dsgd.api.DSGDModel` (mixed into it): known users by score, cold
users by popularity, seen items filtered, ties by item id."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dsgd.api.inputs import _ids_to_str, _is_spark_df
from dsgd.core import columns as C
from dsgd.core.scoring import top_k


class Recommender:
    """The recommendation methods of :class:`~dsgd.api.DSGDModel`."""

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
        seen_u, seen_i = self._seen_rows(req, seen) if exclude_seen else (np.zeros(0, np.int64),) * 2
        urows = self._user_index.get_indexer(req.to_numpy(object))
        pop = self.item_popularity().astype(np.float64)
        out_u: list[str] = []
        out_rank: list[int] = []
        out_i: list[str] = []
        out_s: list[float] = []
        for lo in range(0, len(req), chunk):
            hi = min(lo + chunk, len(req))
            ur = urows[lo:hi]
            known = ur >= 0
            scores = np.broadcast_to(pop, (hi - lo, len(self.items))).copy()
            if known.any():
                scores[known] = self._score_matrix(ur[known])
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

