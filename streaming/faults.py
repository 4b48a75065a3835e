"""Named points of a micro-batch where tests inject a crash (exactly-once tests).

Production code never injects anything: a test passes a :data:`FaultHook` to
:class:`streaming.trainer.StreamTrainer`, which calls it at each point with the batch id.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

#: The points, in the order a batch passes them.
FAULT_POINTS = ("after_events", "after_eval", "after_factors", "after_metrics")

FaultHook = Callable[[str, int], None]


class InjectedFault(RuntimeError):
    """Raised by a fault hook at a named point of a batch."""


def fault_at(targets: set[tuple[str, int]], *, kill: bool = False) -> FaultHook:
    """A hook that fails once at each ``(point, batch_id)`` of ``targets``: raises :class:`InjectedFault`,
    or SIGKILLs the process (``kill``, for crash tests that restart it)."""
    unknown = {p for p, _ in targets} - set(FAULT_POINTS)
    if unknown:
        raise ValueError(f"unknown fault point(s) {sorted(unknown)}; allowed: {', '.join(FAULT_POINTS)}")
    fired: set[tuple[str, int]] = set()

    def hook(point: str, batch_id: int) -> None:
        if (point, batch_id) in targets and (point, batch_id) not in fired:
            fired.add((point, batch_id))
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at {point} of batch {batch_id}")

    return hook
