"""The hand-over between several camera callbacks and one inference worker that runs them in batches.

Why: one model serving every camera of a robot amortises a forward pass over
several frames, but only if the worker never waits for a slow or stopped camera
and never falls behind a fast one. So it is a one-frame mailbox per camera: `put`
never blocks and keeps only each camera's newest frame (a replaced, untaken frame
is counted as dropped and never processed; a queue would build a backlog and
publish ever older frames), and `take_batch` returns as soon as
any camera has a frame, with the newest frame of every camera that has one.

Fairness: when more cameras wait than a batch holds, those served longest ago go
first and a served camera moves to the back of the line. A waiting camera is
therefore served within ceil(cameras / max_batch_size) batches whatever the
others do (within two when a batch holds at least half of the cameras); no
camera can be skipped forever.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Optional

from mtan_ros.errors import ConfigError


class UnknownCameraError(ConfigError, KeyError):
    """A frame for a camera the scheduler was not configured with (a KeyError too, as a lookup that failed)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CameraStats:
    """One camera's counters; received == batched + dropped + waiting at every snapshot."""

    received: int = 0
    dropped: int = 0
    batched: int = 0
    waiting: int = 0


class _Camera:
    __slots__ = ("frame", "has_frame", "received", "dropped", "batched")

    def __init__(self) -> None:
        self.frame: Any = None
        self.has_frame = False  # a flag, not `frame is None`: any object, None included, is a frame
        self.received = 0
        self.dropped = 0
        self.batched = 0

    def stats(self) -> CameraStats:
        return CameraStats(self.received, self.dropped, self.batched, int(self.has_frame))


class BatchScheduler:
    """Newest frame per camera in; batches of (camera, frame), fairly ordered, out. Thread-safe."""

    def __init__(self, cameras: Iterable[Hashable] = ()) -> None:
        self._cond = threading.Condition()
        # Least recently served first; a served camera moves to the end.
        self._cameras: OrderedDict[Hashable, _Camera] = OrderedDict()
        self._waiting = 0
        self._closed = False
        self._last_batch_size = 0
        self._batches = 0
        for camera in cameras:
            self.add_camera(camera)

    # ------------------------------------------------------------------ configuration

    def add_camera(self, camera: Hashable) -> None:
        """Register `camera`; it goes to the front of the line, as never served."""
        if camera is None or camera == "":
            raise ConfigError("a camera needs a non-empty name")
        with self._cond:
            if camera in self._cameras:
                raise ConfigError(f"camera {camera!r} is listed twice; give every camera a distinct name")
            self._cameras[camera] = _Camera()
            self._cameras.move_to_end(camera, last=False)

    def remove_camera(self, camera: Hashable) -> CameraStats:
        """Forget `camera` and return its final counters; a frame still waiting is counted as dropped."""
        with self._cond:
            state = self._known(camera)
            if state.has_frame:
                state.has_frame, state.frame = False, None
                state.dropped += 1
                self._waiting -= 1
            del self._cameras[camera]
            return state.stats()

    @property
    def cameras(self) -> list:
        """The registered cameras, in serving order (served longest ago first)."""
        with self._cond:
            return list(self._cameras)

    # ------------------------------------------------------------------ producers

    def put(self, camera: Hashable, frame: Any) -> bool:
        """Store `frame` as `camera`'s newest; True when it replaced one never taken (a dropped frame)."""
        with self._cond:
            state = self._known(camera)
            state.received += 1
            replaced = state.has_frame
            if replaced:
                state.dropped += 1
            else:
                state.has_frame = True
                self._waiting += 1
            state.frame = frame
            self._cond.notify()
            return replaced

    # ------------------------------------------------------------------ worker

    def take_batch(self, max_batch_size: int = 0, timeout: Optional[float] = None) -> list[tuple[Any, Any]]:
        """The newest frame of each waiting camera, as (camera, frame), at most `max_batch_size` (0: no limit).

        Waits only for the first frame of any camera, never for the batch to fill.
        Returns [] after `timeout` s with nothing waiting, or at once when closed
        and nothing waits (frames put before close are still handed out).
        """
        if max_batch_size < 0:
            raise ConfigError(f"max_batch_size must be 0 (one frame per camera) or positive, got {max_batch_size}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._waiting and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            limit = max_batch_size or len(self._cameras)
            served = []
            for camera, state in self._cameras.items():
                if len(served) >= limit:
                    break
                if state.has_frame:
                    served.append((camera, state))
            batch = []
            for camera, state in served:
                batch.append((camera, state.frame))
                state.frame, state.has_frame = None, False
                state.batched += 1
                self._cameras.move_to_end(camera)
            self._waiting -= len(batch)
            if batch:
                self._last_batch_size = len(batch)
                self._batches += 1
            return batch

    def close(self) -> None:
        """Wake the waiting worker so it can see that it should stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ diagnostics

    def stats(self) -> dict:
        """A consistent snapshot of every camera's counters, keyed by camera."""
        with self._cond:
            return {camera: state.stats() for camera, state in self._cameras.items()}

    @property
    def last_batch_size(self) -> int:
        """How many frames the last non-empty batch held (0 before the first)."""
        return self._last_batch_size

    @property
    def batches(self) -> int:
        """How many non-empty batches were handed out."""
        return self._batches

    def _known(self, camera: Hashable) -> _Camera:
        state = self._cameras.get(camera)
        if state is None:
            raise UnknownCameraError(f"no camera named {camera!r} (configured: "
                                     f"{', '.join(map(repr, self._cameras)) or 'none'}); add_camera it first")
        return state
