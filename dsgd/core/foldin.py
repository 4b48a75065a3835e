"""Request-time fold-in: a user's vector from the user's events, with the item factors fixed.

One function, :func:`fold_in`, serves every place that needs "this user, given these events": the
evaluation harness's fold-in serving mode (a user's events of the current micro-batch that the model has
not trained on yet), the HTTP server (a user with their recent events in the request) and the model
API. What the harness measures is what is served.

Two update rules (:class:`FoldInParams` ``method``):

``"sgd"``
    The model's own SGD rule on the user side only: ``epochs`` passes over the events in the given
    order, each positive (target 1 for implicit, the rating for explicit) followed, for implicit models,
    by ``negatives`` uniform draws from the candidate items (target 0), exactly the per-event update of
    :func:`dsgd.kernel.run_block` with the item row left unchanged. Starts from the user's vector, or
    from zeros for a new user.
``"ls"``
    A closed-form regularised least-squares step (the user half of an ALS iteration). Implicit::

        (G + sum_j c1_j q_j q_j^T + (lam + prior) I) x = sum_j (1 + c1_j) q_j + prior * x0

    with ``G = sum over candidate items q q^T`` (every item a negative with confidence 1, as in
    implicit ALS), ``c1_j = alpha * w_j`` where ``w_j`` sums the events' weights (``ratings``, default 1)
    on item ``j``, and ``lam = reg * n_distinct_items`` when ``reg_per_item`` (MLlib ALS's scaling) else
    ``reg``; with item biases (``use_bias``) the targets are ``p_j - b_j`` (the user bias, the same for
    every item, is kept). Explicit: ridge regression of ``rating - mu - b_i`` on ``q`` (plus a user bias
    when ``use_bias``). ``prior`` pulls the solution towards the starting vector ``x0`` (0 for a new user).
    With ``prior = 0``, ``reg_per_item``, ``alpha``/``reg`` of the ALS fit and the user's whole history
    it is MLlib ALS's own user solve against the snapshot's item factors.

Which rule the product uses per model is chosen from measurements (``bench/RESULTS.md``, section
"Fold-in"): the harness reports every model with and without fold-in.

Example
-------
>>> vec, bias = fold_in(item_vec, None, user_vec, np.array([3, 7, 7]), params=FoldInParams(lr=0.2))
>>> scores = item_vec @ vec
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dsgd.core.hashing import GOLDEN_U64, splitmix64

FOLDIN_METHODS = ("sgd", "ls")


@dataclass(frozen=True)
class FoldInParams:
    """How :func:`fold_in` folds a user in (see the module docstring for the two rules).

    Parameters
    ----------
    method : str
        Supported values: ``"sgd"`` (the model's SGD rule, user side only) and ``"ls"`` (closed-form
        regularised least squares).
    implicit : bool
        Implicit feedback (positives with target 1, negatives with target 0) or explicit ratings.
    lr, epochs, negatives : float, int, int
        ``sgd``: learning rate, passes over the events, uniform negatives per positive (implicit only).
    reg : float
        L2 regularisation (``sgd``: the kernel's per-step ``reg``; ``ls``: ``lambda``).
    use_bias, mu : bool, float
        Explicit models: learn/apply the user bias; global mean added to every prediction.
    alpha : float
        ``ls`` implicit: confidence ``1 + alpha * weight`` of an item the user had events on.
    prior : float
        ``ls``: weight of ``|x - x0|^2`` (0: the starting vector is ignored).
    reg_per_item : bool
        ``ls``: scale ``reg`` by the number of distinct items (MLlib ALS's regularisation).
    max_events : int
        Fold in only the last ``max_events`` events (0: all of them).
    seed : int
        Seed of the negative draws (``sgd``, implicit): the same inputs give the same vector.
    """

    method: str = "sgd"
    implicit: bool = True
    lr: float = 0.2
    epochs: int = 1
    negatives: int = 19
    reg: float = 0.0
    use_bias: bool = False
    mu: float = 0.0
    alpha: float = 1.0
    prior: float = 0.0
    reg_per_item: bool = False
    max_events: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in FOLDIN_METHODS:
            raise ValueError(f"method must be one of {FOLDIN_METHODS}, got {self.method!r}")
        if not (self.lr >= 0 and self.reg >= 0 and self.alpha >= 0 and self.prior >= 0):
            raise ValueError(f"lr, reg, alpha and prior must be >= 0: {self}")
        if self.epochs < 0 or self.negatives < 0 or self.max_events < 0:
            raise ValueError(f"epochs, negatives and max_events must be >= 0: {self}")


@njit(cache=True, nogil=True, fastmath=True)
def _sgd_user(V, bi, x, bu, items, r, lr, reg, mu, implicit, use_bias, negatives, epochs, pool, seed):
    """The kernel's ``_sgd_step`` with the item row fixed; ``x`` (float32 [k]) is updated in place."""
    k = x.shape[0]
    lr32 = np.float32(lr)
    reg32 = np.float32(reg)
    mu32 = np.float32(mu) if not implicit else np.float32(0.0)
    pool_n = pool.shape[0]
    n_neg = negatives if (implicit and pool_n > 0) else 0
    state = seed
    for _ in range(epochs):
        for n in range(items.shape[0]):
            i = items[n]
            for neg in range(n_neg + 1):
                if neg == 0:
                    j = i
                    target = np.float32(1.0) if implicit else r[n]
                else:
                    z = splitmix64(state)
                    state = state + GOLDEN_U64
                    j = pool[np.int64(z % np.uint64(pool_n))]
                    if j == i:
                        continue
                    target = np.float32(0.0)
                pred = mu32
                if use_bias:
                    pred += bu + bi[j]
                for f in range(k):
                    pred += x[f] * V[j, f]
                e = target - pred
                if use_bias:
                    bu += lr32 * (e - reg32 * bu)
                for f in range(k):
                    x[f] = x[f] + lr32 * (e * V[j, f] - reg32 * x[f])
    return bu


@njit(cache=True, nogil=True)
def _gram(V, rows):
    k = V.shape[1]
    G = np.zeros((k, k), np.float64)
    for n in range(rows.shape[0]):
        j = rows[n]
        for a in range(k):
            va = np.float64(V[j, a])
            for b in range(a, k):
                G[a, b] += va * np.float64(V[j, b])
    for a in range(k):
        for b in range(a):
            G[a, b] = G[b, a]
    return G


def item_gram(item_vec: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``sum q q^T`` (float64 [k, k]) over the candidate item rows (all rows if None): the ``G`` of the
    implicit ``ls`` rule. Callers that fold in many users against the same items compute it once.
    (Compiled, not BLAS: no thread pool for a small product.)"""
    V = np.ascontiguousarray(item_vec, dtype=np.float32)
    rows = np.arange(V.shape[0], dtype=np.int64) if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    return _gram(V, rows)


def fold_in(item_vec: np.ndarray, item_bias: np.ndarray | None, user_vec: np.ndarray | None, items: np.ndarray,
            ratings: np.ndarray | None = None, *, params: FoldInParams, user_bias: float = 0.0,
            candidates: np.ndarray | None = None, gram: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The user's vector (float32 [rank]) and bias after folding in ``items`` (item factors fixed).

    Parameters
    ----------
    item_vec : float32 [n_items, rank]
        Item factors; only read.
    item_bias : float32 [n_items] or None
        Item biases (explicit models with biases); None means zeros.
    user_vec : float32 [rank] or None
        The user's current vector; None for a user the model does not know (starts from zeros).
    items : int [n]
        Rows of ``item_vec`` of the user's events, oldest first.
    ratings : float [n], optional
        Explicit ratings, or implicit event weights (``ls``: confidence; ``sgd`` ignores them for
        implicit models). Default 1.
    params : FoldInParams
    user_bias : float
        The user's current bias (explicit models with biases).
    candidates : int [m], optional
        Item rows negatives are drawn from (``sgd``) and ``G`` is summed over (``ls``); default all rows.
    gram : float64 [rank, rank], optional
        A precomputed :func:`item_gram` over ``candidates`` (``ls``, implicit).

    Returns
    -------
    (np.ndarray, float)
        The folded vector (a new array; ``user_vec`` is not modified) and bias.

    Example
    -------
    >>> fold_in(V, None, None, np.array([2, 5]), params=FoldInParams(method="ls", reg=0.1))[0].shape
    (10,)
    """
    items = np.asarray(items, dtype=np.int64)
    if items.ndim != 1:
        raise ValueError("items must be one-dimensional")
    k = np.shape(item_vec)[1] if np.ndim(item_vec) == 2 else -1
    if user_vec is not None and np.shape(user_vec) != (k,):
        raise ValueError(f"user_vec must have shape ({k},)")
    starts = None if user_vec is None else np.asarray(user_vec, np.float32)[None, :]
    vecs, biases = fold_in_many(item_vec, item_bias, starts, np.array([0, items.shape[0]], np.int64), items, ratings,
                                params=params, user_bias=np.array([user_bias], np.float32),
                                candidates=candidates, gram=gram)
    return vecs[0], float(biases[0])


def fold_in_many(item_vec: np.ndarray, item_bias: np.ndarray | None, user_vecs: np.ndarray | None,
                 ptr: np.ndarray, items: np.ndarray, ratings: np.ndarray | None = None, *, params: FoldInParams,
                 user_bias: np.ndarray | None = None, has_user: np.ndarray | None = None,
                 candidates: np.ndarray | None = None, gram: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fold_in` for many users at once (the same rule, one compiled call; :func:`fold_in` is this
    with one user). User ``n``'s events are ``items[ptr[n]:ptr[n+1]]`` (``ratings`` likewise);
    ``user_vecs`` [n_users, rank] their starting vectors (None: all new), ``has_user`` which of them
    the model knows (rows with False start from zeros), ``user_bias`` [n_users]. Returns
    ``(vectors float32 [n_users, rank], biases float32 [n_users])``."""
    p = params
    V = np.ascontiguousarray(item_vec, dtype=np.float32)
    if V.ndim != 2:
        raise ValueError("item_vec must be [n_items, rank]")
    n_items, k = V.shape
    ptr = np.ascontiguousarray(ptr, dtype=np.int64)
    n_users = ptr.shape[0] - 1
    items = np.ascontiguousarray(items, dtype=np.int64)
    if items.ndim != 1 or ptr.ndim != 1 or n_users < 0 or ptr[0] != 0 or ptr[-1] != items.shape[0] \
            or np.any(np.diff(ptr) < 0):
        raise ValueError("ptr must be non-decreasing offsets from 0 to len(items)")
    r = (np.ones(items.shape[0], np.float32) if ratings is None
         else np.ascontiguousarray(ratings, dtype=np.float32))
    if r.shape != items.shape:
        raise ValueError("ratings must align with items")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise IndexError("items hold a row outside item_vec")
    x0 = np.zeros((n_users, k), np.float32)
    if user_vecs is not None:
        uv = np.asarray(user_vecs, np.float32)
        if uv.shape != (n_users, k):
            raise ValueError(f"user_vecs must have shape ({n_users}, {k})")
        x0[:] = uv if has_user is None else np.where(np.asarray(has_user, bool)[:, None], uv, 0.0)
    b0 = np.zeros(n_users, np.float32)
    if p.use_bias and user_bias is not None:
        b0[:] = np.asarray(user_bias, np.float32) if has_user is None else np.where(has_user, user_bias, 0.0)
    bias = np.zeros(n_items, np.float32) if item_bias is None else np.ascontiguousarray(item_bias, np.float32)
    lo = ptr[:-1].copy()
    if p.max_events:
        lo = np.maximum(lo, ptr[1:] - p.max_events)
    if p.method == "sgd":
        pool = (np.arange(n_items, dtype=np.int64) if candidates is None
                else np.ascontiguousarray(candidates, dtype=np.int64))
        out, bout = x0.copy(), b0.copy()
        _sgd_many(V, bias, out, bout, lo, ptr[1:].copy(), items, r, p.lr, p.reg, p.mu, p.implicit, p.use_bias,
                  p.negatives, p.epochs, pool, np.uint64(p.seed & 0xFFFFFFFFFFFFFFFF))
        return out, bout
    rows = None if candidates is None else np.ascontiguousarray(candidates, dtype=np.int64)
    G = (item_gram(V, rows) if gram is None else np.asarray(gram, np.float64)) if p.implicit else np.zeros((k, k))
    kk = k + (1 if (p.use_bias and not p.implicit) else 0)  # explicit: the user bias is solved for too
    A = np.zeros((n_users, kk, kk), np.float64)
    b = np.zeros((n_users, kk), np.float64)
    h = np.zeros(k, np.float64)
    if p.implicit and p.use_bias:  # sum over the candidates of b_j q_j: their targets are -b_j
        cand = np.arange(n_items) if rows is None else rows
        h = (bias[cand].astype(np.float64)[:, None] * V[cand].astype(np.float64)).sum(axis=0)
    _ls_systems(V, bias, x0, b0, lo, ptr[1:].copy(), items, r, G, h, p.implicit, p.use_bias,
                p.alpha, p.reg, p.prior, p.reg_per_item, p.mu, A, b)
    sol = np.linalg.solve(A, b[..., None])[..., 0] if n_users else b
    empty = lo >= ptr[1:]
    out = sol[:, :k].astype(np.float32)
    out[empty] = x0[empty]
    bout = sol[:, k].astype(np.float32) if kk > k else b0.copy()
    bout[empty] = b0[empty]
    return out, bout


@njit(cache=True, nogil=True)
def _seed_of(seed, items, lo, hi):
    """The negatives' seed of one user's fold-in: ``mix_seed(seed, n_events, first item, last item)``."""
    h = splitmix64(np.uint64(0x5EED) ^ seed)
    h = splitmix64(h ^ np.uint64(hi - lo))
    h = splitmix64(h ^ np.uint64(items[lo]))
    return splitmix64(h ^ np.uint64(items[hi - 1]))


@njit(cache=True, nogil=True)
def _sgd_many(V, bias, X, B, lo, hi, items, r, lr, reg, mu, implicit, use_bias, negatives, epochs, pool, seed):
    for n in range(X.shape[0]):
        if hi[n] > lo[n]:
            B[n] = _sgd_user(V, bias, X[n], B[n], items[lo[n]:hi[n]], r[lo[n]:hi[n]], lr, reg, mu, implicit,
                             use_bias, negatives, epochs, pool, _seed_of(seed, items, lo[n], hi[n]))


@njit(cache=True, nogil=True)
def _ls_systems(V, bias, x0, b0, lo, hi, items, r, G, h, implicit, use_bias, alpha, reg, prior, reg_per_item, mu,
                A, b):
    k = V.shape[1]
    kk = A.shape[1]
    for n in range(A.shape[0]):
        a, z = lo[n], hi[n]
        if z <= a:
            for d in range(kk):
                A[n, d, d] = 1.0
            continue
        srt = np.sort(items[a:z])
        distinct = 1
        for m in range(1, srt.shape[0]):
            if srt[m] != srt[m - 1]:
                distinct += 1
        lam = reg * (distinct if reg_per_item else 1.0) + prior
        if implicit:
            for c in range(k):
                for d in range(k):
                    A[n, c, d] = G[c, d]
            for m in range(srt.shape[0]):  # the "1" of 1 + c1 once per distinct item
                if m == 0 or srt[m] != srt[m - 1]:
                    j = srt[m]
                    for c in range(k):
                        b[n, c] += V[j, c]
            for c in range(k):
                b[n, c] -= h[c]
            for e in range(a, z):
                j = items[e]
                c1 = alpha * r[e]
                t = (1.0 - bias[j]) if use_bias else 1.0
                for c in range(k):
                    b[n, c] += c1 * t * V[j, c]
                    for d in range(k):
                        A[n, c, d] += c1 * V[j, c] * V[j, d]
        else:
            for e in range(a, z):
                j = items[e]
                y = r[e] - mu - bias[j]
                for c in range(kk):
                    qc = V[j, c] if c < k else 1.0
                    b[n, c] += y * qc
                    for d in range(kk):
                        qd = V[j, d] if d < k else 1.0
                        A[n, c, d] += qc * qd
        for c in range(kk):
            A[n, c, c] += lam
            b[n, c] += prior * (x0[n, c] if c < k else b0[n])


__all__ = ["FOLDIN_METHODS", "FoldInParams", "fold_in", "fold_in_many", "item_gram"]
