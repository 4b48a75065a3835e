"""The product's retrain in the harness: Spark MLlib ALS through :mod:`dsgd.engines.als` (the code
``dsgd retrain`` runs) and the blend policies of ``batch/`` (replace, warm-start, score-blend)."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsgd.core.foldin import FoldInParams
from dsgd.core.params import KernelParams
from dsgd.core.schedules import Constant, make_schedule
from dsgd.evaluation.dense import DenseModel, DenseSide, dsgd_step
from dsgd.evaluation.fit_cache import FitCache
from dsgd.evaluation.params import POLICY_OF, PRODUCT_KINDS, EvalParams
from dsgd.evaluation.serving import AlsFoldIn, FactorSet, _with_fallback
from dsgd.evaluation.stream import Popularity, Stream

log = logging.getLogger("dsgd.evaluate")


# ---- the product's retrain: ALS through dsgd.engines.als, blend policies of batch/ --------------------------------
@dataclass
class RetrainSetup:
    """What the product models need: the product config (``[model]`` from the harness's parameters,
    ``[retrain]`` as configured), a lazily started Spark session and the fit cache.

    Build it with :func:`retrain_setup`.
    """

    cfg: Any  # dsgd.core.config.Config
    cache: FitCache
    spark_factory: Any = None
    _spark: Any = None
    fit_seconds: float = 0.0
    fits: int = 0
    cache_hits: int = 0

    @property
    def rc(self) -> Any:
        return self.cfg.retrain

    def spark(self) -> Any:
        if self._spark is None:
            if self.spark_factory is not None:
                self._spark = self.spark_factory()
            else:
                from dsgd.store.session import build_session

                cfg = self.cfg if self.cfg.spark.master else self.cfg.replace(spark={"master": "local[2]"})
                self._spark = build_session(cfg)
        return self._spark

    def with_retrain(self, **values: Any) -> RetrainSetup:
        """The same setup (session, cache) with some ``[retrain]`` keys changed (validated)."""
        out = dataclasses.replace(self, cfg=self.cfg.replace(retrain=values))
        out._spark = self._spark
        out.spark_factory = self.spark_factory if self._spark is None else (lambda s=self._spark: s)
        return out


def product_config(cfg: Any, params: EvalParams) -> Any:
    """The product config the harness's product models run: ``[model]`` carries the harness's online
    parameters (so the online part is the streaming trainer with them), the rest is ``cfg``."""
    return cfg.replace(model={"kind": "implicit", "rank": params.rank, "lr": params.lr, "reg": params.reg,
                              "negatives": params.negatives, "epochs": max(1, params.epochs), "blocks": params.d,
                              "seed": params.seed, "init_scale": params.init_scale, "engine": "local",
                              "strata_order": "rotation", "lr_schedule": "constant", "use_bias": params.use_bias,
                              "negative_sampling": "uniform"})


def retrain_setup(cfg: Any | None, params: EvalParams, *, cache_dir: str | Path | None = None,
                  spark: Any = None) -> RetrainSetup:
    """A :class:`RetrainSetup` for ``cfg`` (default: ``conf/dsgd.toml``) and the harness's parameters."""
    if cfg is None:
        from dsgd.core.config import load_config

        cfg = load_config()
    factory = (lambda: spark) if spark is not None else None
    return RetrainSetup(cfg=product_config(cfg, params), cache=FitCache(cache_dir), spark_factory=factory)


def fit_als(setup: RetrainSetup, stream: Stream, end: int, as_of_ms: int) -> dict[str, np.ndarray]:
    """The ALS snapshot ``dsgd retrain --as-of as_of_ms`` would write for the first ``end`` events, as
    stream rows: ``{"user_rows", "user_vec", "user_count", "item_rows", "item_vec", "item_count",
    "seconds"}`` (cached by the events' digest and the settings)."""
    from dsgd.core import columns as C
    from dsgd.engines.als import implicit_prefs, train_als

    rc = setup.rc
    m = setup.cfg.model
    key = ("als", stream.fingerprint(end), as_of_ms, m.rank, m.seed, m.kind, rc.als_max_iter, rc.als_reg,
           rc.als_alpha, implicit_prefs(rc, m.kind), rc.als_center, rc.als_blocks, rc.checkpoint_interval,
           rc.window_days, rc.half_life_days)

    def build() -> dict[str, np.ndarray]:
        import pandas as pd

        spark = setup.spark()
        t0 = time.perf_counter()
        hist = pd.DataFrame({C.USER: stream.user_ids[stream.user[:end]].astype(str),
                             C.ITEM: stream.item_ids[stream.item[:end]].astype(str),
                             C.RATING: np.full(end, np.nan, np.float32), C.TS: stream.ts[:end],
                             C.SEQ: stream.seq[:end]})
        sdf = spark.createDataFrame(hist, "user string, item string, rating float, ts long, seq long")
        res = train_als(spark, setup.cfg, rc, sdf, as_of_ms=as_of_ms)
        out: dict[str, np.ndarray] = {}
        for side, df, ids in (("user", res.users, stream.user_ids), ("item", res.items, stream.item_ids)):
            pdf = df.select(C.ID, C.VEC, C.COUNT).toPandas()
            index = stream.derived(("id_index", side), lambda ids=ids: {str(x): j for j, x in enumerate(ids)})
            out[f"{side}_rows"] = np.array([index[x] for x in pdf[C.ID]], np.int64)
            out[f"{side}_vec"] = (np.stack(pdf[C.VEC].map(lambda v: np.asarray(v, np.float32)).to_list())
                                  if len(pdf) else np.zeros((0, m.rank), np.float32))
            out[f"{side}_count"] = pdf[C.COUNT].to_numpy(np.int64)
        out["seconds"] = np.array(time.perf_counter() - t0)
        setup.fits += 1
        setup.fit_seconds += float(out["seconds"])
        log.debug("ALS fit on %d events (as-of %d): %.1f s", end, as_of_ms, float(out["seconds"]))
        return out

    before = setup.fits
    snap = setup.cache.get_arrays(key, build)
    if setup.fits == before:
        setup.cache_hits += 1
    return snap


def _install(side: DenseSide, rows: np.ndarray, vec: np.ndarray, count: np.ndarray | None) -> None:
    """Write snapshot rows into a side (bias 0, as the ALS snapshot has none)."""
    side.vec[rows] = vec
    side.bias[rows] = 0.0
    if count is not None:
        side.count[rows] = count
    side.known[rows] = True


class ProductModel:
    """The product's retrain in the harness: ``als`` (the frozen ALS snapshot, popularity for users it
    does not know), ``als+online:replace``, ``als+online:score-blend`` and ``retrain+online:warm-start``
    (policies of ``retrain.policy``), next to the online DSGD step of the streaming trainer."""

    def __init__(self, kind: str, params: EvalParams, popularity: Popularity, stream: Stream,
                 setup: RetrainSetup) -> None:
        if kind not in PRODUCT_KINDS:
            raise ValueError(f"not a product model: {kind!r}")
        self.name = kind
        self.p = params
        self.pop = popularity
        self.stream = stream
        self.setup = setup
        self.policy = POLICY_OF.get(kind)
        m = setup.cfg.model
        self.kp = KernelParams(lr=m.lr, reg=m.reg, implicit=True, use_bias=m.use_bias, negatives=m.negatives)
        self.online = (FactorSet(DenseModel(stream, m.rank, m.seed, m.init_scale, m.blocks), params.foldin(),
                                 new_user=params.foldin_new_user, new_user_min=params.foldin_new_user_min)
                       if kind != "als" else None)
        if self.online is not None:
            self.online.use_bias = m.use_bias
        self.snap: FactorSet | None = None
        self.snapshots = 0

    def _snapshot_set(self, snap: dict[str, np.ndarray], end: int) -> FactorSet:
        m = self.setup.cfg.model
        dm = DenseModel(self.stream, m.rank, m.seed, m.init_scale, m.blocks)
        _install(dm.users, snap["user_rows"], snap["user_vec"], snap["user_count"])
        _install(dm.items, snap["item_rows"], snap["item_vec"], snap["item_count"])
        fs = FactorSet(dm, FoldInParams(method="ls"), frozen=True,
                       als=AlsFoldIn(self.setup.rc, self.p.foldin_new_user_min))
        fs.cut = end
        return fs

    def retrain(self, stream: Stream, end: int, period: int, as_of_ms: int) -> None:
        if end == 0:
            return
        self.snapshots += 1
        if self.policy == "warm-start":
            self._warm_start(end, as_of_ms)
            return
        snap = fit_als(self.setup, stream, end, as_of_ms)
        if self.policy == "replace":  # live := snapshot rows (rows the snapshot lacks keep the stream's)
            assert self.online is not None
            dm = self.online.m
            _install(dm.users, snap["user_rows"], snap["user_vec"], snap["user_count"])
            _install(dm.items, snap["item_rows"], snap["item_vec"], snap["item_count"])
            dm.rebuild_pools()
            dm.version += 1
        else:  # als (frozen) and score-blend: the snapshot is served next to the live model
            self.snap = self._snapshot_set(snap, end)

    def _warm_start(self, end: int, as_of_ms: int) -> None:
        """:func:`batch.blend.warm_start_model`: DSGD epochs over the history from the online factors
        with the stream's kernel, seeded by the cut-off; counts stay as the stream left them."""
        from dsgd.engines.als import replay_seed

        assert self.online is not None
        rc, m = self.setup.rc, self.setup.cfg.model
        dm = self.online.m
        counts = (dm.users.count.copy(), dm.items.count.copy())
        lr = rc.warm_start_lr
        if rc.warm_start_epochs == 0 or lr == 0:
            return
        kp = dataclasses.replace(self.kp, lr=lr)
        order = np.lexsort((self.stream.seq[:end], self.stream.ts[:end]))
        dsgd_step(dm, slice(0, end), kp, epochs=rc.warm_start_epochs, schedule=make_schedule(m.lr_schedule, lr),
                  strata_order=m.strata_order, batch_id=replay_seed(as_of_ms),
                  order=None if np.all(order[1:] > order[:-1]) else order)
        dm.users.count[:], dm.items.count[:] = counts
        dm.version += 1

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        if self.online is not None and hi > lo:
            m = self.setup.cfg.model
            dsgd_step(self.online.m, slice(lo, hi), self.kp, epochs=m.epochs, schedule=Constant(m.lr),
                      strata_order=m.strata_order, batch_id=batch_id)

    def _serve(self, on: tuple[np.ndarray, np.ndarray] | None, ba: tuple[np.ndarray, np.ndarray] | None,
               n_known: int, n: int) -> np.ndarray:
        from dsgd.core.blend import blend_scores

        if self.name == "als" or self.policy == "score-blend":
            if ba is None:  # before the first retrain
                if on is None:
                    return _with_fallback(np.empty((n, n_known), np.float32), np.zeros(n, bool), self.pop, n_known)
                return _with_fallback(self.online.scores(on[0], n_known), on[1], self.pop, n_known)
            assert self.snap is not None
            if on is None:
                return _with_fallback(self.snap.scores(ba[0], n_known), ba[1], self.pop, n_known)
            assert self.online is not None
            s_on = self.online.scores(on[0], n_known)
            s_ba = self.snap.scores(ba[0], n_known)
            on_known = self.online.item_view(n_known)[0]
            ba_known = self.snap.item_view(n_known)[0]
            out = np.empty((n, n_known), np.float32)
            both, only_on, only_ba = on[1] & ba[1], on[1] & ~ba[1], ~on[1] & ba[1]
            alpha = self.setup.rc.alpha
            for rows, a, b in ((both, s_on, s_ba), (only_on, s_on, None), (only_ba, None, s_ba)):
                if rows.any():
                    out[rows] = blend_scores(None if a is None else a[rows], None if b is None else b[rows],
                                             on_known, ba_known, alpha)
            return _with_fallback(out, on[1] | ba[1], self.pop, n_known)
        assert self.online is not None
        return _with_fallback(self.online.scores(on[0], n_known), on[1], self.pop, n_known)

    def score(self, users: np.ndarray, n_known: int, stream: Stream | None = None) -> np.ndarray:
        on = self.online.user_rows(users) if self.online is not None else None
        ba = self.snap.user_rows(users) if self.snap is not None else None
        return self._serve(on, ba, n_known, len(users))

    def score_foldin(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> np.ndarray:
        on = self.online.foldin_rows(stream, lo, c, ce, n_known) if self.online is not None else None
        ba = self.snap.foldin_rows(stream, lo, c, ce, n_known) if self.snap is not None else None
        return self._serve(on, ba, n_known, ce - c)
