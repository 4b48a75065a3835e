"""The model as the trainer holds it between batches: the factors table's head and (local engine) every
factor row in the driver, re-read only when another writer changed the table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dsgd.core import columns as C
from dsgd.core.factors import SideFactors
from dsgd.core.schedules import make_schedule, schedule_from_state
from dsgd.store.errors import IncompatibleTable
from dsgd.store.factor_store import FactorStore, ModelHead

log = logging.getLogger("dsgd.stream")


@dataclass
class ModelState:
    """The model as of factors-table ``version``: metadata, and (local engine) all factor rows."""

    version: int
    seq: int  # the model commit sequence: the compare-and-swap token of the next write
    meta: dict
    raw: str  # the metadata text as stored
    users: SideFactors | None = None
    items: SideFactors | None = None

    @property
    def head(self) -> ModelHead:
        return ModelHead(version=self.version, seq=self.seq, raw=self.raw)

    def advance(self, head: ModelHead) -> None:
        """The state after this trainer's own commit ``head`` (the rows it wrote are already here)."""
        self.version, self.seq, self.raw = head.version, head.seq, head.raw
        self.meta = json.loads(head.raw)


class ModelTooLarge(IncompatibleTable):
    """The model outgrew what the local engine may hold in the driver (``model.local_max_rows``)."""


class ModelCache:
    """Keeps :class:`ModelState` across batches; ``get`` re-reads the table when its version moved."""

    def __init__(self, store: FactorStore, *, rank: int, local: bool, max_rows: int = 10**10,
                 auto: bool = False) -> None:
        self.store, self.rank, self.local, self.max_rows, self.auto = store, rank, local, max_rows, auto
        self.state: ModelState | None = None

    def drop(self) -> None:
        self.state = None

    def get(self) -> ModelState:
        version = self.store.version()
        if self.state is not None and self.state.version == version:
            return self._within_limit(self.state)
        t = time.perf_counter()
        head = self.store.head()
        state = ModelState(version=head.version, seq=head.seq, meta=head.meta, raw=head.raw)
        if self.local:
            state.users, state.items = (self._side(side, head.version) for side in (C.SIDE_USER, C.SIDE_ITEM))
            log.info("loaded the model at factors version %d: %d users, %d items (%.1fs)", head.version,
                     len(state.users), len(state.items), time.perf_counter() - t)
        self.state = state
        return self._within_limit(state)

    def _within_limit(self, state: ModelState) -> ModelState:
        """The local engine's driver copy may not outgrow ``model.local_max_rows``: under ``auto`` the
        trainer moves to the Spark engine, else the batch fails with an error naming the key."""
        if state.users is None or len(state.users) + len(state.items) <= self.max_rows:
            return state
        rows = len(state.users) + len(state.items)
        if self.auto:
            log.warning("the model has %d rows > model.local_max_rows = %d: the Spark engine takes over", rows,
                        self.max_rows)
            self.local, state.users, state.items = False, None, None
            return state
        raise ModelTooLarge(f"the model holds {rows} factor rows, more than config key model.local_max_rows = "
                            f"{self.max_rows} that model.engine = local keeps in the driver; set model.engine = "
                            "spark (or auto), or raise model.local_max_rows")

    def _side(self, side: str, version: int) -> SideFactors:
        rows = self.store.load(side, version=version).limit(self.max_rows + 1)
        return SideFactors.from_arrow(rows.toArrow(), self.rank)

    def after_maintenance(self, res: Any, head: ModelHead | None, only_maintenance: Callable[[], bool]) -> bool:
        """Keep the cached model across a maintenance pass that changed no row's content: it moves to the
        table's new version (and to the rewrite's commit sequence). ``only_maintenance`` (it reads the Delta
        history) is asked only when there is a cached model of the pass's starting version. Returns
        whether it was kept."""
        state = self.state
        if state is None or state.version != res.version_before or not only_maintenance():
            self.drop()
            return False
        if head is not None:
            state.seq, state.raw = head.seq, head.raw
            state.meta = json.loads(head.raw)
        state.version = res.version_after
        return True

    def after_commit(self, state: ModelState, head: ModelHead | None) -> None:
        """Keep the cache if ``head`` is the commit right after ``state`` (this trainer's own), else drop it."""
        if head is not None and head.version == state.version + 1:
            state.advance(head)
        else:
            self.drop()


class StepSchedule:
    """A learning-rate schedule whose epoch ``e`` of this batch is global step ``offset + e``, so the rate
    decays across batches; its state is stored in the model metadata."""

    def __init__(self, base: Any, offset: int) -> None:
        self.base, self.offset = base, offset

    @classmethod
    def from_meta(cls, meta: dict[str, Any], kind: str, lr: float) -> StepSchedule:
        state = meta.get("schedule")
        base = schedule_from_state(state) if state else make_schedule(kind, lr)
        return cls(base, int(meta.get("steps", 0)))

    def rate(self, step: int) -> float:
        return self.base.rate(self.offset + step)

    def observe(self, loss: float) -> None:
        self.base.observe(loss)
