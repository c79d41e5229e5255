"""Per-reason log throttling.

rclpy's `throttle_duration_sec` throttles by call site, so one noisy problem
(e.g. a camera sending mono16) would hide a different one (a corrupt JPEG) logged
from the same line. This keys on the problem's kind and counts what it swallowed,
so a warning can say "(12 more since the last warning)".
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class Throttle:
    """`ready(key)` is True at most once per `period_s` per key."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        """Record one occurrence of `key`; True when it should be reported now."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last >= self.period_s:
                self._last[key] = now
                return True
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False

    def take_suppressed(self, key: str) -> int:
        """How many occurrences of `key` were swallowed since the last report (and reset)."""
        with self._lock:
            return self._suppressed.pop(key, 0)

    def message(self, key: str, text: str) -> str | None:
        """`text` (with a count of swallowed repeats) if `key` is due, else None."""
        if not self.ready(key):
            return None
        skipped = self.take_suppressed(key)
        return f"{text} ({skipped} more since the last such warning)" if skipped else text
