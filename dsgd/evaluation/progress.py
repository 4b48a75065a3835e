"""Progress of a model's pass over the stream: a bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger("dsgd.evaluate")


class Progress:
    """Progress of one model's pass: a tqdm bar on a terminal, a log line every ``every`` seconds
    otherwise (events done, events/s, ETA)."""

    def __init__(self, total: int, desc: str, *, enabled: bool | None = None, every: float = 15.0) -> None:
        import sys

        self.total, self.desc, self.every = total, desc, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        tty = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if tty and enabled is not False:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="ev", unit_scale=True, leave=False, dynamic_ncols=True)
        self.log = enabled is not False and not tty

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.log and now - self.last >= self.every:
            self.last = now
            rate = self.done / (now - self.t0)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d events (%.0f%%), %.0f events/s, ETA %s", self.desc, self.done, self.total,
                     100.0 * self.done / max(1, self.total), rate, _hms(eta))

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        secs = time.perf_counter() - self.t0
        if self.log or self.bar is not None:
            log.info("%s: %d events in %.1f s (%.0f events/s)", self.desc, self.done, secs,
                     self.done / secs if secs > 0 else float("nan"))
        return secs


def _hms(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
