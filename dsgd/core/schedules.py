"""Learning-rate schedules with a small, JSON-friendly state so a stream can persist them.

>>> s = make_schedule("bold_driver", 0.1)
>>> s.rate(0)
0.1
>>> s.observe(1.0); s.observe(0.9); round(s.rate(2), 6)
0.105
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULE_KINDS = ("constant", "inverse_sqrt", "bold_driver")


class Constant:
    """``lr0`` at every step."""

    kind = "constant"

    def __init__(self, lr0: float) -> None:
        self.lr0 = float(lr0)

    def rate(self, step: int) -> float:
        return self.lr0

    def observe(self, loss: float) -> None:
        return None

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "lr0": self.lr0}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Constant:
        return cls(state["lr0"])


class InverseSqrt(Constant):
    """``lr0 / sqrt(1 + step)``."""

    kind = "inverse_sqrt"

    def rate(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.lr0 / math.sqrt(1.0 + step)


class BoldDriver:
    """Bold driver (Gemulla et al. 2011): after each epoch's loss, ``lr *= up`` if the loss decreased
    against the previous epoch, else ``lr *= down``. ``rate(step)`` returns the current rate."""

    kind = "bold_driver"

    def __init__(self, lr0: float, up: float = 1.05, down: float = 0.5) -> None:
        if not (up >= 1.0 and 0.0 < down <= 1.0):
            raise ValueError(f"bold_driver needs up >= 1 and 0 < down <= 1, got up={up}, down={down}")
        self.lr0 = float(lr0)
        self.up = float(up)
        self.down = float(down)
        self.lr = self.lr0
        self.prev_loss: float | None = None

    def rate(self, step: int) -> float:
        return self.lr

    def observe(self, loss: float) -> None:
        loss = float(loss)
        if self.prev_loss is not None:
            self.lr *= self.up if loss < self.prev_loss else self.down
        self.prev_loss = loss

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "lr0": self.lr0, "up": self.up, "down": self.down, "lr": self.lr,
                "prev_loss": self.prev_loss}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BoldDriver:
        s = cls(state["lr0"], up=state["up"], down=state["down"])
        s.lr = float(state["lr"])
        s.prev_loss = None if state["prev_loss"] is None else float(state["prev_loss"])
        return s


Schedule = Constant | InverseSqrt | BoldDriver
_ALLOWED = ", ".join(SCHEDULE_KINDS)
_CLASSES: dict[str, type] = {"constant": Constant, "inverse_sqrt": InverseSqrt, "bold_driver": BoldDriver}


def make_schedule(kind: str, lr0: float, **kw: float) -> Schedule:
    """A schedule by name. Supported kinds: ``"constant"``, ``"inverse_sqrt"``, ``"bold_driver"``
    (keywords ``up=1.05``, ``down=0.5``)."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; allowed values: {_ALLOWED}")
    if not lr0 > 0:
        raise ValueError(f"lr0 must be > 0, got {lr0!r}")
    return _CLASSES[kind](lr0, **kw)


def schedule_from_state(state: dict[str, Any]) -> Schedule:
    """Rebuild any schedule from its :meth:`to_state` dict."""
    kind = state.get("kind")
    if kind not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; allowed values: {_ALLOWED}")
    return _CLASSES[kind].from_state(state)
