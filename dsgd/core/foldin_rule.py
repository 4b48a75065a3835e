"""Which fold-in the product serves: the rule (:class:`FoldInRule`) and its application to users.

The update itself is :func:`dsgd.core.foldin.fold_in_many`; this module says which of its settings are
served and for whom, so the server (``dsgd serve``), the model API (``DSGDModel.recommend(...,
events=)``) and ``dsgd recommend`` agree. Defaults were chosen from the harness's measurements
(branch issue18, ``bench/RESULTS.md`` "Fold-in"): the closed-form least-squares step (``ls``) with a
small prior (0.1) towards the user's current vector; a user the model does not know is folded in from
zeros once they have at least 3 events (before that the popularity fallback serves them). For the
batch snapshot of a score-blend model the rule is ALS's own user solve (``reg_per_item``, the retrain's
``als_reg`` / ``als_alpha``, no prior).

Example
-------
>>> rule = FoldInRule.for_model(kind="implicit")
>>> vecs, bias, folded = fold_users(item_vec, None, None, None, None, np.array([0, 3]), rows, params=rule.online,
...                                 new_user_min_events=rule.new_user_min_events)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsgd.core.foldin import FoldInParams, fold_in_many

#: The measured defaults (see the module docstring).
DEFAULT_METHOD = "ls"
DEFAULT_PRIOR = 0.1
DEFAULT_NEW_USER_MIN_EVENTS = 3


@dataclass(frozen=True)
class FoldInRule:
    """The fold-in of the online model, of the batch snapshot (score-blend), and when a new user qualifies."""

    online: FoldInParams
    batch: FoldInParams | None = None
    new_user_min_events: int = DEFAULT_NEW_USER_MIN_EVENTS

    def __post_init__(self) -> None:
        if self.new_user_min_events < 1:
            raise ValueError(f"new_user_min_events must be >= 1, got {self.new_user_min_events}")

    @classmethod
    def for_model(cls, *, kind: str, use_bias: bool = False, mu: float = 0.0, method: str = DEFAULT_METHOD,
                  prior: float = DEFAULT_PRIOR, reg: float = 0.0, alpha: float = 1.0, lr: float = 0.2,
                  epochs: int = 1, negatives: int = 19, max_events: int = 0,
                  new_user_min_events: int = DEFAULT_NEW_USER_MIN_EVENTS, als_reg: float = 0.1,
                  als_alpha: float = 1.0) -> FoldInRule:
        """The served rule for a model of ``kind`` (``"implicit"``/``"explicit"``); explicit models always
        fold the user bias in (they learn biases) and add ``mu``."""
        implicit = kind != "explicit"
        online = FoldInParams(method=method, implicit=implicit, lr=lr, epochs=epochs, negatives=negatives, reg=reg,
                              use_bias=use_bias or not implicit, mu=0.0 if implicit else mu, alpha=alpha,
                              prior=prior if method == "ls" else 0.0, max_events=max_events)
        batch = FoldInParams(method="ls", implicit=implicit, reg=als_reg, alpha=als_alpha, reg_per_item=True,
                             prior=0.0, max_events=max_events, use_bias=False)
        return cls(online=online, batch=batch, new_user_min_events=new_user_min_events)


def item_gram_blas(item_vec: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65536) -> np.ndarray:
    """``sum q q^T`` (float64 [rank, rank]) over ``rows`` (all if None): the ``gram`` :func:`fold_in_many`
    takes, computed once per loaded model. float32 BLAS products over chunks of ``chunk`` rows, summed in
    float64: equal to :func:`dsgd.core.foldin.item_gram` within ~1e-7 relative, ~10x faster at 10^6 items."""
    V = np.asarray(item_vec, np.float32)
    k = V.shape[1]
    G = np.zeros((k, k), np.float64)
    n = V.shape[0] if rows is None else len(rows)
    for lo in range(0, n, chunk):
        part = V[lo:lo + chunk] if rows is None else V[np.asarray(rows[lo:lo + chunk], np.int64)]
        G += (part.T @ part).astype(np.float64)
    return G


def fold_users(item_vec: np.ndarray, item_bias: np.ndarray | None, start_vecs: np.ndarray | None,
               start_bias: np.ndarray | None, has_user: np.ndarray | None, ptr: np.ndarray, items: np.ndarray,
               ratings: np.ndarray | None = None, *, params: FoldInParams, new_user_min_events: int,
               candidates: np.ndarray | None = None, gram: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold ``n`` users in from their events (user ``j``: ``items[ptr[j]:ptr[j+1]]``, rows of ``item_vec``).

    A known user (``has_user``) starts from ``start_vecs``/``start_bias``; a new one from zeros, and only
    with at least ``new_user_min_events`` events. Returns ``(vecs float32 [n, rank], bias float32 [n],
    folded bool [n])``; rows not folded keep their start (zeros for new users).
    """
    ptr = np.asarray(ptr, np.int64)
    n = ptr.shape[0] - 1
    k = np.shape(item_vec)[1]
    has = np.zeros(n, bool) if has_user is None else np.asarray(has_user, bool)
    n_ev = np.diff(ptr)
    folded = (n_ev > 0) & (has | (n_ev >= new_user_min_events))
    x0 = np.zeros((n, k), np.float32) if start_vecs is None else np.asarray(start_vecs, np.float32)
    b0 = np.zeros(n, np.float32) if start_bias is None else np.asarray(start_bias, np.float32)
    if params.implicit and params.method == "ls" and gram is None:
        gram = item_gram_blas(item_vec, candidates)
    vecs, bias = fold_in_many(item_vec, item_bias, x0, ptr, items, ratings, params=params, user_bias=b0,
                              has_user=has, candidates=candidates, gram=gram)
    vecs = np.where(folded[:, None], vecs, np.where(has[:, None], x0, 0.0)).astype(np.float32)
    bias = np.where(folded, bias, np.where(has, b0, 0.0)).astype(np.float32)
    return vecs, bias, folded
