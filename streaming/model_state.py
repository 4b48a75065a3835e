"""The model as the trainer holds it between batches: the factors table's head and (local engine) every
factor row in the driver, re-read only when another writer changed the table."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from dsgd.core import columns as C
from dsgd.core.factors import SideFactors
from dsgd.core.schedules import make_schedule, schedule_from_state
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


class ModelCache:
    """Keeps :class:`ModelState` across batches; ``get`` re-reads the table when its version moved."""

    def __init__(self, store: FactorStore, *, rank: int, local: bool) -> None:
        self.store, self.rank, self.local = store, rank, local
        self.state: ModelState | None = None

    def drop(self) -> None:
        self.state = None

    def get(self) -> ModelState:
        version = self.store.version()
        if self.state is not None and self.state.version == version:
            return self.state
        t = time.perf_counter()
        head = self.store.head()
        state = ModelState(version=head.version, seq=head.seq, meta=head.meta, raw=head.raw)
        if self.local:
            state.users = SideFactors.from_arrow(self.store.load(C.SIDE_USER, version=head.version).toArrow(), self.rank)
            state.items = SideFactors.from_arrow(self.store.load(C.SIDE_ITEM, version=head.version).toArrow(), self.rank)
            log.info("loaded the model at factors version %d: %d users, %d items (%.1fs)", head.version,
                     len(state.users), len(state.items), time.perf_counter() - t)
        self.state = state
        return state

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
