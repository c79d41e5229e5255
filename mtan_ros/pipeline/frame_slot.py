"""A one-item mailbox between the subscription callback and the inference thread.

Why not a queue: a camera at 30 Hz and inference at 5 Hz would build a backlog
that grows without bound, and every published result would describe an older
frame than the last. The slot keeps only the newest frame; a frame replaced
before the worker took it is reported as dropped, and is never processed.
"""
from __future__ import annotations

import threading
from typing import Any


class LatestFrameSlot:
    """`put` never blocks and replaces what is there; `take` waits for the next item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store `item`; True when it replaced one that was never taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest item (and empty the slot), or None after `timeout` s or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the waiting worker so it can see that it should stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
