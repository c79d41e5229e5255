"""Counters, rates and latency percentiles of the perception node, and their /diagnostics form.

Why: users of comparable nodes cannot tell whether the node is slow, dropping
frames or starved of input. The worker thread records every frame here; a 1 Hz
timer turns a snapshot into one diagnostic_msgs/DiagnosticStatus whose keys are
stable, so tools (the replay evaluator, `ros2 topic echo /diagnostics`, rqt's
robot monitor) can read them.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


class RateMeter:
    """Events per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._events: deque[float] = deque()
        self._start = clock()

    def tick(self) -> None:
        self._events.append(self._clock())

    def rate(self) -> float:
        now = self._clock()
        while self._events and now - self._events[0] > self.window_s:
            self._events.popleft()
        span = min(self.window_s, now - self._start)
        return len(self._events) / span if span > 0 else 0.0


class LatencyWindow:
    """The last `size` latencies (ms) and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(float(ms))

    def percentile(self, q: float) -> float:
        """q in [0, 100], linear interpolation; NaN when empty."""
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        pos = (len(ordered) - 1) * q / 100.0
        low = int(math.floor(pos))
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    def __len__(self) -> int:
        return len(self._values)


@dataclass
class StatsSnapshot:
    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    frames_skipped_idle: int
    input_rate_hz: float
    output_rate_hz: float
    inference_ms_p50: float
    inference_ms_p95: float
    latency_ms_p50: float
    latency_ms_p95: float
    processing_ms_p50: float
    processing_ms_p95: float
    seconds_since_input: float
    last_problem: str
    frames_lost_in_transport: int = 0


class PipelineStats:
    """Thread-safe counters shared by the subscription callback, the worker and the timer.

    dropped: frames replaced in the latest-frame slot before the worker took them;
    rejected: frames that could not be converted or inferred (bad input);
    skipped_idle: frames not processed because no output had a subscriber;
    latency: header stamp -> outputs published (node clock; meaningful when the
    camera's clock is the node's); processing: message received -> outputs published.
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.rejected = 0
        self.skipped_idle = 0
        self.lost_in_transport = 0
        self.last_problem = ""
        self._last_input: float | None = None
        self._in = RateMeter(window_s, clock)
        self._out = RateMeter(window_s, clock)
        self._inference = LatencyWindow()
        self._latency = LatencyWindow()
        self._processing = LatencyWindow()

    def on_received(self, replaced_unprocessed: bool) -> None:
        with self._lock:
            self.received += 1
            self.dropped += int(replaced_unprocessed)
            self._last_input = self._clock()
            self._in.tick()

    def on_rejected(self, problem: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_problem = problem

    def on_lost_in_transport(self, total: int) -> None:
        """Camera frames published that never arrived: the middleware's count or sequence gaps (input_monitor)."""
        with self._lock:
            self.lost_in_transport = int(total)

    def on_idle(self) -> None:
        with self._lock:
            self.skipped_idle += 1

    def on_published(self, inference_ms: float, processing_ms: float, latency_ms: float | None) -> None:
        with self._lock:
            self.processed += 1
            self._out.tick()
            self._inference.add(inference_ms)
            self._processing.add(processing_ms)
            if latency_ms is not None:
                self._latency.add(latency_ms)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            since = math.inf if self._last_input is None else self._clock() - self._last_input
            return StatsSnapshot(
                frames_received=self.received,
                frames_processed=self.processed,
                frames_dropped=self.dropped,
                frames_rejected=self.rejected,
                frames_skipped_idle=self.skipped_idle,
                input_rate_hz=self._in.rate(),
                output_rate_hz=self._out.rate(),
                inference_ms_p50=self._inference.percentile(50),
                inference_ms_p95=self._inference.percentile(95),
                latency_ms_p50=self._latency.percentile(50),
                latency_ms_p95=self._latency.percentile(95),
                processing_ms_p50=self._processing.percentile(50),
                processing_ms_p95=self._processing.percentile(95),
                seconds_since_input=since,
                last_problem=self.last_problem,
                frames_lost_in_transport=self.lost_in_transport,
            )


class BatchStats:
    """Sizes of the batches the model actually ran (frames decoded and wanted, not merely taken).

    Why: with several cameras, how many frames share a forward pass is what the
    batching buys; a batch of 1 on a many-camera node means the model keeps up.
    """

    def __init__(self, window: int = 50) -> None:
        self._lock = threading.Lock()
        self._sizes: deque[int] = deque(maxlen=window)
        self.batches = 0

    def on_batch(self, size: int) -> None:
        with self._lock:
            self._sizes.append(int(size))
            self.batches += 1

    def values(self) -> dict[str, str]:
        """Diagnostic values: the last batch's size, the mean of the recent ones, how many ran."""
        with self._lock:
            last = self._sizes[-1] if self._sizes else 0
            mean = sum(self._sizes) / len(self._sizes) if self._sizes else math.nan
            return {"batch_size": str(last), "batch_size_mean": _fmt(mean, 2), "batches": str(self.batches)}


def _fmt(value: float, digits: int = 1) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"


def diagnostic_status(
    name: str,
    snap: StatsSnapshot,
    *,
    device: str,
    precision: str,
    input_topic: str,
    extra: dict[str, str] | None = None,
    stale_after_s: float = 5.0,
    warning: str | None = None,
    inactive: str | None = None,
) -> DiagnosticStatus:
    """One DiagnosticStatus: OK while frames flow, WARN when input stops or frames are rejected.

    `warning` (e.g. why a matched camera delivers nothing) overrides the message at WARN
    level; `inactive` names a lifecycle state in which no frames are expected.
    """
    if warning:
        level, message = DiagnosticStatus.WARN, warning
    elif inactive:
        level, message = DiagnosticStatus.OK, f"{inactive}: not taking frames"
    elif not math.isfinite(snap.seconds_since_input):
        level, message = DiagnosticStatus.WARN, f"waiting for images on {input_topic}"
    elif snap.seconds_since_input > stale_after_s:
        level, message = DiagnosticStatus.WARN, f"no image on {input_topic} for {snap.seconds_since_input:.0f} s"
    elif snap.frames_processed == 0 and snap.frames_rejected > 0:
        level, message = DiagnosticStatus.WARN, f"every image rejected: {snap.last_problem}"
    else:
        level = DiagnosticStatus.OK
        message = f"{snap.output_rate_hz:.1f} Hz out of {snap.input_rate_hz:.1f} Hz in"
    values = {
        "input_rate_hz": _fmt(snap.input_rate_hz, 2),
        "output_rate_hz": _fmt(snap.output_rate_hz, 2),
        "frames_received": str(snap.frames_received),
        "frames_processed": str(snap.frames_processed),
        "frames_dropped": str(snap.frames_dropped),
        "frames_rejected": str(snap.frames_rejected),
        "frames_skipped_no_subscriber": str(snap.frames_skipped_idle),
        "frames_lost_in_transport": str(snap.frames_lost_in_transport),
        "inference_ms_p50": _fmt(snap.inference_ms_p50),
        "inference_ms_p95": _fmt(snap.inference_ms_p95),
        "latency_ms_p50": _fmt(snap.latency_ms_p50),
        "latency_ms_p95": _fmt(snap.latency_ms_p95),
        "processing_ms_p50": _fmt(snap.processing_ms_p50),
        "processing_ms_p95": _fmt(snap.processing_ms_p95),
        "device": device,
        "precision": precision,
        "input_topic": input_topic,
        "last_problem": snap.last_problem,
    }
    values.update(extra or {})
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=device,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def diagnostic_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a status as a dict (for tools and tests reading /diagnostics)."""
    return {kv.key: kv.value for kv in status.values}
