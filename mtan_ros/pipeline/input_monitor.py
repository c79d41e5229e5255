"""Why no camera frame arrives, in one line with its fix.

A camera driver with ROS 2 defaults and a reader that does not match it fail
silently: a best-effort reader of a reliable VGA+ camera receives almost nothing
(lost UDP fragments are never repaired), a reliable reader never matches a
best-effort camera, and a best-effort camera without a large shared-memory
segment loses most large frames whatever the reader does. This watcher is fed
what the node can see — the publishers' offered reliability and how many of them
DDS matched, complete frames, frames the middleware reports lost, incompatible-QoS
events — and names the probable cause and the fix. It has no ROS dependency so
that every case is testable without DDS.

Frames are counted lost two ways, and the larger count is kept: what the middleware
reports, and gaps in each publisher's sequence numbers. The second catches what
the first misses: a reliable 2 Mpx camera at 30 Hz with ROS 2 defaults delivered
22 of 150 frames here and Fast DDS reported none lost (its writer had overwritten
the rest in its keep-last history).

Losses are judged over the camera's most recent frames, not over a time window: a
camera losing 4-11 of 30 frames at 10 Hz under load never lost 5 within one window
of a few seconds, so a time-window rule (and one that waited for half to be lost)
stayed silent while every one of them was counted.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

# Transport losses warn, with the fix, when more than LOSS_WARN_SHARE of the last
# LOSS_WINDOW_FRAMES frames the camera published (arrived + lost) were lost: more
# than 3 of 30, for a reliable or a best-effort camera alike. The warning lasts until
# at most LOSS_CLEAR_SHARE of that window is lost (1 of 30), so a loss rate near the
# threshold warns once instead of on and off.
LOSS_WINDOW_FRAMES = 30
LOSS_WARN_SHARE = 0.10
LOSS_CLEAR_SHARE = 0.05
# Sequence numbers are tracked for this many publishers of the topic (the newest ones).
MAX_PUBLISHERS = 16


@dataclass(frozen=True)
class InputProblem:
    """`code` identifies the cause (warn once per cause); `text` is the one-line explanation with the fix."""

    code: str
    text: str


class InputMonitor:
    """Watches one camera topic; `problem()` returns what is wrong now, or None."""

    def __init__(self, topic: str, warn_after_s: float, profile_hint: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.warn_after_s = float(warn_after_s)
        self.profile_hint = profile_hint
        self._clock = clock
        self.offered: tuple[str, ...] = ()
        self.matched = 0
        self.subscribed = "best effort"
        self.frames = 0
        self.reported_lost = 0
        self.skipped_in_sequence = 0
        self._lost_base = 0  # reported lost counts restart with every new subscription
        self._last_sequence: dict[Any, int] = {}  # per publisher
        self._matched_since: Optional[float] = None
        self._frames_at_match = 0
        self._unmatched_since: Optional[float] = None
        self._incompatible: Optional[tuple[float, str]] = None
        self._frame_shape: Optional[tuple[int, int]] = None
        self._recent: deque[bool] = deque(maxlen=LOSS_WINDOW_FRAMES)  # the latest frames published: True = lost
        self._lost_in_recent = 0  # how much of `lost` has been entered in _recent
        self._last_lossy: Optional[InputProblem] = None

    # ---------------------------------------------------------------- what the node sees

    def observe_graph(self, offered: Sequence[str], matched: int, subscribed: str) -> None:
        """Publishers on the topic (their offered reliability), how many DDS matched, our reliability."""
        now = self._clock()
        self.offered, self.subscribed = tuple(offered), subscribed
        if matched > 0 and self._matched_since is None:
            self._matched_since, self._frames_at_match = now, self.frames
        elif matched == 0:
            self._matched_since = None
            self._recent.clear()  # no camera now: its past losses say nothing about the next one
        self.matched = matched
        if self.offered and matched == 0:
            self._unmatched_since = self._unmatched_since if self._unmatched_since is not None else now
        else:
            self._unmatched_since = None
            if matched:
                self._incompatible = None

    def on_frame(self, publisher: Any = None, sequence: Optional[int] = None) -> None:
        """A complete frame; `sequence` is its publisher's sequence number where the middleware gives one."""
        self.frames += 1
        self._follow_sequence(publisher, sequence)
        self._enter_losses()  # a gap in the sequence: those frames were published before this one
        self._recent.append(False)

    def _follow_sequence(self, publisher: Any, sequence: Optional[int]) -> None:
        if sequence is None:
            return
        last = self._last_sequence.get(publisher)
        if last is not None and sequence <= last:
            return  # a copy through a second subscription, or out of order: counted already
        if last is not None:
            self.skipped_in_sequence += sequence - last - 1
        self._last_sequence.pop(publisher, None)
        self._last_sequence[publisher] = sequence  # newest last, so the oldest publisher goes first
        if len(self._last_sequence) > MAX_PUBLISHERS:
            del self._last_sequence[next(iter(self._last_sequence))]

    def on_lost(self, total_for_subscription: int) -> None:
        """The middleware's running count of lost messages for the current subscription."""
        self.reported_lost = self._lost_base + int(total_for_subscription)
        self._enter_losses()

    def on_new_subscription(self) -> None:
        """A subscription was re-created (its reported lost count starts again at 0)."""
        self._lost_base = self.reported_lost
        self._matched_since = None

    @property
    def lost(self) -> int:
        """Frames published that never arrived: reported by the middleware or seen as sequence gaps."""
        return max(self.reported_lost, self.skipped_in_sequence)

    def _enter_losses(self) -> None:
        """Enter frames newly counted as lost in the window of recent frames (once, however they were seen)."""
        new = self.lost - self._lost_in_recent
        if new > 0:
            self._recent.extend([True] * min(new, LOSS_WINDOW_FRAMES))
            self._lost_in_recent = self.lost

    def on_incompatible(self, policy: str) -> None:
        self._incompatible = (self._clock(), policy)

    def expect_frames(self, width: int, height: int) -> None:
        """The camera's frame size, from its camera_info (for the explanation only)."""
        self._frame_shape = (int(height), int(width))

    # ---------------------------------------------------------------- the verdict

    def problem(self) -> Optional[InputProblem]:
        now = self._clock()
        if self._unmatched_since is not None and (now - self._unmatched_since >= self.warn_after_s
                                                  or self._incompatible is not None):
            return self._incompatible_problem(now)
        if self._matched_since is not None and self.frames == self._frames_at_match \
                and now - self._matched_since >= self.warn_after_s:
            return self._silent_problem(now - self._matched_since)
        return self._lossy_problem()

    def _incompatible_problem(self, now: float) -> InputProblem:
        policy = f" (incompatible {self._incompatible[1]})" if self._incompatible is not None else ""
        return InputProblem(
            "incompatible",
            f"{self.topic}: {len(self.offered)} publisher(s) offering {self._offered_words()} did not match this "
            f"{self.subscribed} subscription for {now - (self._unmatched_since or now):.0f} s{policy}; set "
            "input_reliability to auto (or to what the camera offers), or remove the qos_overrides for this topic")

    def _silent_problem(self, seconds: float) -> InputProblem:
        lost = f", {self.lost} lost in transport" if self.lost else ""
        what = f"{self.topic}: a camera matched {seconds:.0f} s ago but no complete frame arrived{lost}"
        code, cause = self._transport_cause()
        if code == "best_effort_reader" or (code == "best_effort_camera"
                                            and (self.lost or not self._fits_shared_memory())):
            return InputProblem(code, f"{what}. {cause}")
        return InputProblem("no_frames", f"{what}. Check that it is streaming (`ros2 topic hz {self.topic}`)")

    def _lossy_problem(self) -> Optional[InputProblem]:
        """More than 10 % of the last 30 frames lost (see LOSS_WARN_SHARE), until at most 5 % are."""
        lost, published = sum(self._recent), len(self._recent)
        share = LOSS_CLEAR_SHARE if self._last_lossy is not None else LOSS_WARN_SHARE
        problem = None
        if lost > share * LOSS_WINDOW_FRAMES:
            # The same causes (and fixes) as a silent camera: one warning when one turns into the other.
            code, cause = self._transport_cause()
            problem = InputProblem(code, f"{self.topic}: {lost} of the last {published} frames were lost in "
                                         f"transport. {cause}")
        self._last_lossy = problem
        return problem

    def _transport_cause(self) -> tuple[str, str]:
        """(code, explanation with the fix) for frames lost on the way, by which side is best effort."""
        if "best effort" in self.offered:
            return "best_effort_camera", self._best_effort_cause()
        if self.subscribed == "best effort":
            return "best_effort_reader", self._best_effort_reader_cause()
        return "lossy_reliable_camera", self._reliable_loss_cause()

    def _fits_shared_memory(self) -> bool:
        """Known rgb8-sized frames below the 0.5 MB segment: best effort cannot be what loses them."""
        if self._frame_shape is None:
            return False
        height, width = self._frame_shape
        return height * width * 3 < 500_000

    def _best_effort_cause(self) -> str:
        size = ""
        if self._frame_shape is not None:
            height, width = self._frame_shape
            size = f" ({width}x{height} frames are ~{height * width * 3 / 1e6:.1f} MB)"
        fix = (f"start the camera driver with FASTDDS_DEFAULT_PROFILES_FILE={self.profile_hint}"
               if self.profile_hint else "give the camera driver a Fast DDS profile with a large shared-memory "
               "segment (this package's config/fastdds_shm.xml)")
        return (f"With best effort, frames above a default Fast DDS participant's 0.5 MB shared-memory segment "
                f"travel as UDP fragments that are never repaired{size}. Fix: {fix}, or make the camera publish "
                "reliable")

    @staticmethod
    def _best_effort_reader_cause() -> str:
        return ("The camera offers reliable but input_reliability pins best effort, so lost fragments of large "
                "frames are never repaired; set input_reliability: auto (or reliable)")

    def _reliable_loss_cause(self) -> str:
        """A reliable writer gives up on a reader only when newer frames push unsent ones out of its history."""
        fix = (f"FASTDDS_DEFAULT_PROFILES_FILE={self.profile_hint}" if self.profile_hint
               else "a Fast DDS profile with a large shared-memory segment (this package's config/fastdds_shm.xml)")
        return ("The camera is reliable, so its writer dropped them: newer frames overwrote its keep-last history "
                "before they reached this node (the link is slower than the camera). Fix: start the camera driver "
                f"with {fix}, set compressed_input: true (the node then reads image_raw/compressed), or lower the "
                "camera's rate or resolution")

    def _offered_words(self) -> str:
        return " and ".join(sorted(set(self.offered))) or "nothing"
